"""Demo stage 5: train both models through the data server, evaluate, publish, screen.

The view classifier and the RHD screening model train on the remote data (clips
decrypted at the site, held in memory here), are evaluated on the test split with
:func:`echoscreen.evaluate.evaluate_run`, published as one immutable package, and
that package screens a held-out phantom cohort (a seed never used in training) from
its DICOM folders, as a clinic would.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from echoscreen.demo.config import DemoConfig
    from echoscreen.demo.data import Server

PACKAGE = ("rhd-demo", "1")


@dataclass(frozen=True)
class Runs:
    """The two training run folders."""

    view: Path
    rhd: Path


def train_models(cfg: DemoConfig, server: Server, console: Console) -> Runs:
    """Train the view and rhd models on the remote data; return their run folders."""
    import torch

    from echoscreen.train import TrainConfig, fit

    root = cfg.workdir / "runs"
    if root.exists():
        shutil.rmtree(root)
    runs = Runs(root / "view", root / "rhd")
    common: dict[str, Any] = {"data": server.url, "identity": server.identity,
                              "dataset": cfg.dataset, "frames": cfg.train_frames,
                              "size": cfg.train_size, "seed": cfg.seed, "lr": cfg.lr}  # fmt: skip
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        for task, run, epochs, batch in (("view", runs.view, cfg.view_epochs, cfg.batch_size),
                                         ("rhd", runs.rhd, cfg.rhd_epochs,
                                          cfg.rhd_batch_size)):  # fmt: skip
            shape = f"3x{cfg.train_frames}x{cfg.train_size}x{cfg.train_size}"
            console.print(f"training {task} model: {epochs} epochs, batch {batch}, input {shape}")
            fit(TrainConfig(task=task, run=run, epochs=epochs, batch_size=batch,
                            max_clips=cfg.max_clips, **common))  # fmt: skip
    finally:
        torch.set_num_threads(before)
    return runs


def _est(e: dict[str, Any] | None) -> str:
    """``value [lo, hi]`` of an evaluate estimate, or why it is missing."""
    if not e or e.get("value") is None:
        return f"n/a ({(e or {}).get('reason', 'missing')})"
    ci = e.get("ci")
    return f"{e['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def evaluate_models(runs: Runs) -> tuple[Table, dict[str, Any]]:
    """Evaluate both runs on their test split; a metrics table and both metrics dicts."""
    from echoscreen.evaluate import evaluate_run

    view, rhd = evaluate_run(runs.view, "test"), evaluate_run(runs.rhd, "test")
    op = rhd.get("operating_point", {})
    thr = op.get("threshold")
    table = Table(title="Test split (patient-level, never trained on), 95% CIs")
    table.add_column("metric")
    table.add_column("value [95% CI]", justify="right")
    table.add_row(f"view accuracy ({view['n_clips']} clips)", _est(view["view_accuracy"]))
    table.add_row("colour Doppler accuracy", _est(view["doppler_accuracy"]))
    table.add_row(f"RHD screen-positive AUROC ({rhd['n_studies']} studies)", _est(rhd["auroc"]))
    table.add_row("average precision", _est(rhd["average_precision"]))
    point = "none" if thr is None else (f"{thr:.3f} (chosen on {op['n_val']} validation studies "
                                        f"for sensitivity >= {op['target_sensitivity']:.2f})")
    table.add_row("operating point", point)
    table.add_row("sensitivity at the operating point", _est(rhd["sensitivity"]))
    table.add_row("specificity at the operating point", _est(rhd["specificity"]))
    table.add_row("three-class accuracy", _est(rhd["accuracy_3class"]))
    return table, {"view": view, "rhd": rhd}


def publish_package(cfg: DemoConfig, runs: Runs) -> Path:
    """Publish both runs as ``rhd-demo:1`` into ``workdir/registry`` (replaced)."""
    from echoscreen.registry import PublishConfig, publish

    registry = cfg.workdir / "registry"
    if registry.exists():
        shutil.rmtree(registry)
    name, version = PACKAGE
    return publish(PublishConfig(rhd_run=runs.rhd, view_run=runs.view, registry=registry,
                                 name=name, version=version, spec=cfg.spec))  # fmt: skip


def _held_out_cohort(cfg: DemoConfig, console: Console) -> Path:
    from echoscreen.store.report import progress_bar
    from echoscreen.synth import CohortConfig, generate_cohort

    out = cfg.workdir / "held-out"
    if out.exists():
        shutil.rmtree(out)
    with progress_bar(console, "held-out studies") as progress:
        generate_cohort(out, CohortConfig(studies=cfg.held_out, seed=cfg.held_out_seed,
                                          frames=cfg.frames, size=cfg.cohort_size,
                                          workers=cfg.workers),
                        progress)  # fmt: skip
    return out


def _truth(cohort: Path) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """``{study folder: label}`` and ``{(study folder, file): view}`` from the cohort's CSVs."""
    with (cohort / "labels.csv").open(newline="") as fh:
        label = {r["study_instance_uid"]: r["label"] for r in csv.DictReader(fh)}
    studies: dict[str, str] = {}
    views: dict[tuple[str, str], str] = {}
    with (cohort / "clips.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            folder, name = str(Path(r["path"]).parent), Path(r["path"]).name
            studies[folder] = label[r["study_instance_uid"]]
            views[(folder, name)] = r["view"]
    return studies, views


def screen_held_out(cfg: DemoConfig, package: Path,
                    console: Console) -> tuple[Table, dict[str, Any]]:  # fmt: skip
    """Screen a fresh phantom cohort (unseen seed) study by study from its DICOM folders.

    Returns:
        A per-study table and ``{"studies", "decisions", "view_accuracy", "auroc"}``
        (view accuracy over all clips, AUROC over the conclusive studies, with CIs).
    """
    from echoscreen.evaluate.summary import EvalConfig, proportion, ranking
    from echoscreen.screen import Screener

    cohort = _held_out_cohort(cfg, console)
    studies, views = _truth(cohort)
    screener = Screener.open(cfg.workdir / "registry", ":".join(PACKAGE))
    table = Table(title=f"Held-out phantom studies (seed {cfg.held_out_seed}) screened "
                        f"with {':'.join(PACKAGE)}")  # fmt: skip
    for col in ("study", "label", "decision", "p(screen+)", "views right"):
        table.add_column(col, justify="left" if col in ("study", "label", "decision") else "right")
    right = total = 0
    decisions: dict[str, str] = {}
    y: list[int] = []
    p: list[float] = []
    for folder, label in sorted(studies.items()):
        res = screener.screen_path(cohort / folder)
        ok = sum(views.get((folder, c.file)) == c.view for c in res.clips)
        right, total = right + ok, total + len(res.clips)
        decisions[folder] = res.decision
        if res.p_screen is not None:
            y.append(int(label != "normal"))
            p.append(res.p_screen)
        prob = "-" if res.p_screen is None else f"{res.p_screen:.3f}"
        table.add_row(folder, label, res.decision, prob, f"{ok}/{len(res.clips)}")
    import numpy as np

    auroc = ranking(np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.float64),
                    EvalConfig())["auroc"]  # fmt: skip
    summary = {"studies": len(studies), "decisions": decisions,
               "view_accuracy": proportion(right, total, "no readable clips"), "auroc": auroc}
    return table, summary


def held_out_line(summary: dict[str, Any]) -> str:
    """One line: held-out view accuracy and AUROC with their CIs."""
    n = sum(d != "inconclusive" for d in summary["decisions"].values())
    return (f"held-out: view accuracy {_est(summary['view_accuracy'])}; RHD AUROC "
            f"{_est(summary['auroc'])} over {n} conclusive of {summary['studies']} studies")
