"""One epoch of training and one pass of evaluation, for both tasks.

Every loss is a sum over the examples of a batch divided by the batch size
(class weights included), so N processes with batch B, whose gradients DDP
averages, compute the gradient of one process with batch N*B.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from echoscreen.models import VIEWS, aggregate
from echoscreen.train.config import TrainConfig
from echoscreen.train.dist import DistEnv
from echoscreen.train.metrics import accuracy, auroc
from echoscreen.train.transforms import transform_batch

Advance = Callable[[int], None]
Records = list[dict[str, Any]]


@dataclass(frozen=True)
class Criterion:
    """The loss of a task.

    Attributes:
        task: ``view`` or ``rhd``.
        class_weight: per-class weights of the cross-entropy (7 views or 3 labels).
        pos_weight: weight of positive examples in the screen BCE (rhd).
        aux_weight: weight of the per-clip auxiliary BCE (rhd).
    """

    task: str
    class_weight: torch.Tensor
    pos_weight: float = 1.0
    aux_weight: float = 0.2

    def __call__(self, out: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batch loss (scalar) from the model output and the targets of :func:`inputs`."""
        b = t["target"].shape[0]
        w = self.class_weight.to(out["view" if self.task == "view" else "class3"].device)
        if self.task == "view":
            y, d = t["target"], t["doppler"]
            ce = F.cross_entropy(out["view"].float(), y.clamp(min=0), reduction="none")
            ce = (ce * w[y.clamp(min=0)] * (y >= 0)).sum()
            bce = F.binary_cross_entropy_with_logits(
                out["doppler"].float(), d.clamp(min=0).float(), reduction="none")
            return (ce + (bce * (d >= 0)).sum()) / b
        y = t["target"]
        screen = (y > 0).float()
        pw = torch.tensor(self.pos_weight, device=y.device)
        bce = F.binary_cross_entropy_with_logits(out["screen"].float(), screen, pos_weight=pw,
                                                 reduction="sum")  # fmt: skip
        ce = (F.cross_entropy(out["class3"].float(), y, reduction="none") * w[y]).sum()
        mask = t["mask"].float()
        clip = F.binary_cross_entropy_with_logits(
            out["clip_screen"].float(), screen[:, None].expand_as(mask), reduction="none")
        aux = ((clip * mask).sum(1) / mask.sum(1).clamp(min=1)).sum()
        return (bce + ce + self.aux_weight * aux) / b


Targets = dict[str, torch.Tensor]


def inputs(batch: Any, cfg: TrainConfig, epoch: int, train: bool,
           device: torch.device) -> tuple[tuple[torch.Tensor, ...], Targets]:  # fmt: skip
    """Model inputs and loss targets of a loader batch (moved as uint8, transformed there).

    Returns:
        ``(args, targets)``: ``args`` for ``model(*args)``; ``targets`` with ``target``
        (view index or label index, -1 unknown), and ``doppler`` (view) or ``mask`` (rhd).
    """
    kw: dict[str, Any] = {"frames": cfg.frames, "size": cfg.size, "seed": cfg.seed,
                          "epoch": epoch, "train": train and cfg.augment,
                          "geometric": cfg.geometric}  # fmt: skip
    if cfg.task == "view":
        x, meta = batch
        views = [VIEWS.index(v) if v in VIEWS else -1 for v in meta["view"]]
        targets = {"target": torch.tensor(views, dtype=torch.long),
                   "doppler": torch.as_tensor(meta["doppler"], dtype=torch.long)}  # fmt: skip
        x = x.to(device, non_blocking=True)  # uint8: a quarter of the bytes of the input
        args: tuple[torch.Tensor, ...] = (transform_batch(x, list(meta["clip"]), **kw),)
    else:
        clips, mask = batch["clips"], batch["mask"]
        b, n = mask.shape
        keys = [k for ids in batch["clip_ids"] for k in ids]
        real = transform_batch(clips[mask].to(device, non_blocking=True), keys, **kw)
        full = torch.zeros((b, n, *real.shape[1:]), dtype=real.dtype, device=device)
        full[mask.to(device)] = real
        args = (full, mask, batch["views"])
        targets = {"target": batch["label_index"], "mask": mask}
    return (tuple(a.to(device, non_blocking=True) for a in args),
            {k: v.to(device) for k, v in targets.items()})  # fmt: skip


def autocast(device: torch.device) -> AbstractContextManager[Any]:
    """bf16 (or fp16) autocast on CUDA; nothing (fp32) on the CPU."""
    if device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _all_sum(env: DistEnv, *values: float) -> list[float]:
    if env.world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    tdist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def train_one_epoch(model: nn.Module, loader: Any, criterion: Criterion,
                    optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
                    cfg: TrainConfig, epoch: int, env: DistEnv,
                    advance: Advance | None = None) -> dict[str, float]:  # fmt: skip
    """Train for one pass over ``loader``; the scheduler steps every batch.

    Returns:
        ``{"train_loss": mean loss over every rank's examples, "lr": last learning rate}``.
    """
    model.train()
    total, count = 0.0, 0.0
    for batch in loader:
        args, targets = inputs(batch, cfg, epoch, True, env.device)
        with autocast(env.device):
            out = model(*args)
        loss = criterion(out, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        b = int(targets["target"].shape[0])
        total, count = total + float(loss.detach()) * b, count + b
        if advance is not None:
            advance(1)
    total, count = _all_sum(env, total, count)
    return {"train_loss": total / max(count, 1), "lr": float(scheduler.get_last_lr()[0])}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, criterion: Criterion, cfg: TrainConfig,
             device: torch.device,
             advance: Advance | None = None) -> tuple[dict[str, float], Records]:  # fmt: skip
    """Evaluate on a whole split (no augmentation, model in eval mode).

    Returns:
        ``(metrics, records)``: metrics ``loss`` and ``view_acc``/``doppler_acc`` (view)
        or ``auroc``/``acc3`` (rhd); records in the predictions-file format.
    """
    model.eval()
    total, count, records = 0.0, 0, []
    for batch in loader:
        args, targets = inputs(batch, cfg, 0, False, device)
        with autocast(device):
            out = model(*args)
        b = int(targets["target"].shape[0])
        total, count = total + float(criterion(out, targets)) * b, count + b
        records += _records(cfg.task, batch, out, args)
        if advance is not None:
            advance(1)
    metrics = {"loss": total / count if count else math.nan}
    if cfg.task == "view":
        metrics["view_acc"] = accuracy([VIEWS.index(r["view_pred"]) for r in records],
                                       [VIEWS.index(r["view"]) if r["view"] in VIEWS else -1
                                        for r in records])  # fmt: skip
        metrics["doppler_acc"] = accuracy([int(r["p_doppler"] >= 0.5) for r in records],
                                          [r["doppler"] for r in records])  # fmt: skip
    else:
        pos = [r["label_index"] > 0 for r in records]
        metrics["auroc"] = auroc([r["p_screen"] for r in records], pos)
        metrics["auroc_clip_mean"] = auroc([r["p_clip_mean"] for r in records], pos)
        metrics["acc3"] = accuracy([max(range(3), key=lambda k: r["p3"][k]) for r in records],
                                   [r["label_index"] for r in records])  # fmt: skip
    return metrics, records


def _records(task: str, batch: Any, out: dict[str, torch.Tensor],
             args: tuple[torch.Tensor, ...]) -> list[dict[str, Any]]:  # fmt: skip
    """Prediction records of one batch (see the predictions-file format in docs/train.md)."""
    if task == "view":
        _, meta = batch
        p_view = out["view"].float().softmax(-1).cpu()
        p_dop = out["doppler"].float().sigmoid().cpu()
        return [{"clip": meta["clip"][i], "study": meta["study"][i], "view": meta["view"][i],
                 "view_pred": VIEWS[int(p_view[i].argmax())], "p_view": p_view[i].tolist(),
                 "doppler": int(meta["doppler"][i]), "p_doppler": float(p_dop[i])}
                for i in range(len(p_dop))]  # fmt: skip
    mask = args[1].cpu()
    p_clip = out["clip_screen"].float().sigmoid().cpu()
    agg = {m: aggregate(p_clip, mask, m) for m in ("mean", "vote", "max")}
    p_screen = out["screen"].float().sigmoid().cpu()
    p3 = out["class3"].float().softmax(-1).cpu()
    recs = []
    for i in range(len(p_screen)):
        age = batch["age_years"][i]
        recs.append({"study": batch["study"][i], "label_index": int(batch["label_index"][i]),
                     "p_screen": float(p_screen[i]), "p3": p3[i].tolist(),
                     "sex": batch["sex"][i], "age_years": None if math.isnan(age) else age,
                     "clips": list(batch["clip_ids"][i]),
                     **{f"p_clip_{m}": float(v[i]) for m, v in agg.items()}})  # fmt: skip
    return recs
