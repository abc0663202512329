"""``fit(cfg)``: a whole training run, in one process or as one rank of ``torchrun``.

Files of ``cfg.run`` (written by rank 0 only): ``config.json``, ``clips.json`` (the
stored clips' shape and reader, :meth:`~echoscreen.train.data.Loaders.stored_clips`),
``metrics.jsonl``
(one line per epoch), ``checkpoint.pt`` (every epoch), ``best.pt`` (the
lowest validation loss) and, at the end,
``predictions_val.json`` and ``predictions_test.json`` from the best weights (rhd:
temperature-scaled on validation first, see :mod:`echoscreen.train.calibrate`, which also
writes ``calibration.json`` and stores the temperatures in ``best.pt``).

Exact resume: the sampling order of epoch ``e`` depends on ``(seed, e)``, each
clip's augmentation on ``(seed, e, clip)``, and the global generators are
re-seeded from ``(seed, e, rank)`` at the start of every epoch; with model,
optimizer, scheduler and scaler restored, epoch ``e`` after a resume computes
what it would have computed without the interruption.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from echoscreen.errors import ConfigError
from echoscreen.models import VIEWS, ModelConfig, create_model
from echoscreen.train import checkpoint as ck
from echoscreen.train.calibrate import calibrate
from echoscreen.train.config import TrainConfig
from echoscreen.train.data import Loaders, StudyDataset, build_loaders
from echoscreen.train.dist import DistEnv, barrier, distributed, read_env
from echoscreen.train.loop import Criterion, evaluate, train_one_epoch
from echoscreen.train.metrics import class_weights
from echoscreen.train.progress import Bars
from echoscreen.train.transforms import clip_generator


def fit(cfg: TrainConfig, *, progress: bool = True,
        stop_after: int | None = None) -> dict[str, Any]:
    """Train, validate every epoch, checkpoint, and write the run's predictions.

    Args:
        cfg: the run configuration.
        progress: show rich progress bars (rank 0 only).
        stop_after: return after this many epochs of this call, as a kill at an epoch
            boundary would (the checkpoint then resumes the run).

    Returns:
        rank 0: ``{"epochs": done, "best_epoch", "best_score", "val": metrics,
        "test": metrics}`` (``val``/``test`` from the best weights, once the run is
        complete); other ranks: ``{"epochs": done}``.

    Raises:
        ConfigError: the run folder holds another run, or nothing to resume.
    """
    env = read_env()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    with distributed(env):
        resume = _should_resume(cfg, env)
        loaders = build_loaders(cfg, env.rank, env.world)
        try:
            return _fit(cfg, env, loaders, resume, progress, stop_after)
        finally:
            loaders.close()


def _should_resume(cfg: TrainConfig, env: DistEnv) -> bool:
    """Resume when asked, or after a torchrun restart that finds this run's checkpoint."""
    ckpt, saved = cfg.run / "checkpoint.pt", cfg.run / "config.json"
    if saved.exists():
        old = TrainConfig.load(saved)
        if old.identity_dict() != cfg.identity_dict():
            raise ConfigError(
                f"{cfg.run} holds a run with other settings; use --resume (which reloads them) "
                "or a new --run folder"
            )
    if cfg.resume:
        if not ckpt.exists():
            raise ConfigError(f"nothing to resume: no {ckpt}; start the run without --resume")
        return True
    if ckpt.exists():
        if env.launched and env.restarts > 0:
            return True  # elastic restart of the same run
        raise ConfigError(f"{cfg.run} already holds a trained run; pass --resume or a new --run")
    return False


def _criterion(cfg: TrainConfig, train_set: Any) -> Criterion:
    """Loss with class weights (and pos_weight) from the training split's counts."""
    if isinstance(train_set, StudyDataset):
        counts = [sum(e.label_index == k for e in train_set.studies) for k in range(3)]
        pos, neg = counts[1] + counts[2], counts[0]
        return Criterion("rhd", torch.tensor(class_weights(counts)),
                         pos_weight=neg / pos if pos and neg else 1.0,
                         aux_weight=cfg.aux_weight)  # fmt: skip
    views = [c.view for c in train_set.clips]
    counts = [views.count(v) for v in VIEWS]
    return Criterion("view", torch.tensor(class_weights(counts)))


def _scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, steps: int) -> Any:
    total = max(1, cfg.epochs * steps)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    warm = max(1, total // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _score(m: dict[str, float]) -> float:
    """Higher is better: minus the validation loss, for both tasks.

    Validation accuracies on the small splits move in coarse steps: the rhd AUROC in
    steps of 1/(n_pos n_neg) picked epoch 1 of the demo (a model near its initial
    detector); the view accuracy on ~90 clips in steps of 1.1 % picked epoch 4 of 6 of a
    demo run (2 clips more right than epochs 5-6, mid-schedule at half the peak rate,
    with a higher loss). The loss is continuous in every probability and rewards
    fitting all of them.
    """
    return -(min(m["loss"], 1e3) if math.isfinite(m["loss"]) else 1e3)


def _seed_epoch(cfg: TrainConfig, epoch: int, rank: int) -> None:
    seed = int(clip_generator(cfg.seed, epoch, f"rank{rank}").initial_seed())
    torch.manual_seed(seed)


@dataclass
class _State:
    """What a run carries from epoch to epoch (and what checkpoint.pt saves)."""

    model: nn.Module
    criterion: Criterion
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    start: int = 0
    best: float = -math.inf

    def checkpoint(self, cfg: TrainConfig, epoch: int) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": epoch, "config": cfg.to_json(), "best": self.best,
                "rng": ck.rng_state()}  # fmt: skip


def _setup(cfg: TrainConfig, env: DistEnv, loaders: Loaders, resume: bool) -> _State:
    """Model, loss, optimizer, scheduler and scaler; restored from checkpoint.pt on resume."""
    torch.manual_seed(cfg.seed)
    mcfg = ModelConfig(size=cfg.model_size, frames=cfg.frames, image=cfg.size, dropout=cfg.dropout)
    model = create_model(cfg.task, mcfg).to(env.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    fp16 = env.device.type == "cuda" and not torch.cuda.is_bf16_supported()
    st = _State(model, _criterion(cfg, loaders.train_set), opt,
                _scheduler(cfg, opt, len(loaders.train)),
                torch.amp.GradScaler(env.device.type, enabled=fp16))  # fmt: skip
    if resume:
        _restore(st, cfg.run / "checkpoint.pt")
    elif env.main:
        cfg.run.mkdir(parents=True, exist_ok=True)
        cfg.save(cfg.run / "config.json")
        (cfg.run / "clips.json").write_text(json.dumps(loaders.stored_clips(), indent=1) + "\n")
    return st


def _restore(st: _State, path: Path) -> None:
    """Load ``path`` into the run's state.

    Raises:
        ConfigError: the file is no checkpoint of this run (another task's or model's,
            or a file lacking its parts).
    """
    state = ck.load(path)
    try:
        st.model.load_state_dict(state["model"])
        st.opt.load_state_dict(state["optimizer"])
        st.sched.load_state_dict(state["scheduler"])
        st.scaler.load_state_dict(state["scaler"])
        ck.set_rng_state(state["rng"])
        st.start, st.best = int(state["epoch"]), float(state["best"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        why = (str(exc).splitlines() or [""])[0][:200] or type(exc).__name__
        raise ConfigError(f"{path} is not a checkpoint of this run ({type(exc).__name__}: "
                          f"{why}); restore it, or start a new run in a new --run folder") \
            from exc


def _epoch(cfg: TrainConfig, env: DistEnv, loaders: Loaders, st: _State, net: nn.Module,
           epoch: int, bars: Bars) -> None:  # fmt: skip
    """Train one epoch; on rank 0 validate, log, and checkpoint."""
    t0 = time.perf_counter()
    loaders.sampler.set_epoch(epoch)
    _seed_epoch(cfg, epoch, env.rank)
    advance = bars.task(f"epoch {epoch + 1}/{cfg.epochs}", len(loaders.train))
    row: dict[str, Any] = {"epoch": epoch + 1}
    row |= train_one_epoch(net, loaders.train, st.criterion, st.opt, st.sched, st.scaler, cfg,
                           epoch, env, advance)  # fmt: skip
    if env.main:
        advance = bars.task("validating", len(loaders.val))
        val, _ = evaluate(st.model, loaders.val, st.criterion, cfg, env.device, advance)
        row |= {f"val_{k}": v for k, v in val.items()}
        row["time_s"] = round(time.perf_counter() - t0, 3)
        score = _score(val)
        if score > st.best:
            st.best = score
            best = {"model": st.model.state_dict(), "config": cfg.to_json(),
                    "epoch": epoch + 1, "score": score}  # fmt: skip
            ck.atomic_save(best, cfg.run / "best.pt")
        _append(cfg.run / "metrics.jsonl", row)
        ck.atomic_save(st.checkpoint(cfg, epoch + 1), cfg.run / "checkpoint.pt")
    barrier(env)


def _fit(cfg: TrainConfig, env: DistEnv, loaders: Loaders, resume: bool, progress: bool,
         stop_after: int | None) -> dict[str, Any]:  # fmt: skip
    st = _setup(cfg, env, loaders, resume)
    net: nn.Module = DistributedDataParallel(st.model) if env.world > 1 else st.model
    done = st.start
    with Bars(progress and env.main) as bars:
        for epoch in range(st.start, cfg.epochs):
            if stop_after is not None and epoch - st.start >= stop_after:
                break
            _epoch(cfg, env, loaders, st, net, epoch, bars)
            done = epoch + 1
    if not env.main:
        return {"epochs": done}
    result: dict[str, Any] = {"epochs": done, "best_score": st.best}
    if done == cfg.epochs:
        result |= _predict(cfg, st.model, st.criterion, loaders, env)
    return result


def _predict(cfg: TrainConfig, model: nn.Module, criterion: Criterion, loaders: Loaders,
             env: DistEnv) -> dict[str, Any]:  # fmt: skip
    """Load best.pt (rhd: calibrate it on val), write predictions_{val,test}.json."""
    best = ck.load(cfg.run / "best.pt")
    model.load_state_dict(best["model"])
    out: dict[str, Any] = {"best_epoch": best["epoch"]}
    if cfg.task == "rhd":  # idempotent: a rerun after a kill refits from T = 1
        out["calibration"] = best["calibration"] = calibrate(model, loaders.val, cfg, env.device)
        best["model"] = model.state_dict()
        ck.atomic_save(best, cfg.run / "best.pt")
        (cfg.run / "calibration.json").write_text(json.dumps(out["calibration"], indent=1) + "\n")
    for split, loader in (("val", loaders.val), ("test", loaders.test)):
        metrics, records = evaluate(model, loader, criterion, cfg, env.device)
        (cfg.run / f"predictions_{split}.json").write_text(json.dumps(records, indent=1) + "\n")
        out[split] = _jsonable(metrics)
    return out


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}


def _append(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(_jsonable(row)) + "\n")
        f.flush()
        os.fsync(f.fileno())
