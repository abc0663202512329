"""``evaluate_run``: a run's prediction files in, ``metrics.json`` and ``report.html`` out."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from echoscreen.errors import EvaluateError
from echoscreen.evaluate.predictions import (
    RhdPredictions,
    ViewPredictions,
    config_task,
    detect_task,
    load_records,
    parse_rhd,
    parse_view,
)
from echoscreen.evaluate.summary import EvalConfig, rhd_metrics, view_metrics

PLOTS = "plots"


def _rhd_plots(pred: RhdPredictions, out: dict[str, Any], plots: Path) -> dict[str, str]:
    from echoscreen.evaluate import plots as p

    known = pred.label_index >= 0
    y = (pred.label_index[known] > 0).astype(np.int64)
    files: dict[str, str] = {}
    if out["auroc"]["value"] is not None:
        curves = {"attention": (y, pred.p_screen[known])}
        curves.update({k: (y, v[known]) for k, v in pred.baselines.items()})
        conf = out["confusion_screen"]
        point = None
        if conf is not None:
            (tn, fp), (fn, tp) = conf["matrix"]
            point = (fp / (fp + tn), tp / (tp + fn))
        files["roc"] = p.roc_plot(curves, point, plots / "roc.png")
        files["pr"] = p.pr_plot(y, pred.p_screen[known], plots / "pr.png")
        files["subgroups"] = p.subgroup_plot(out["subgroups"], plots / "subgroups.png")
        files["aggregation"] = p.aggregation_plot(out["aggregation"], plots / "aggregation.png")
    cal = out["calibration"]
    files["calibration"] = p.reliability_plot(
        cal["curve"], cal["ece"]["value"], plots / "calibration.png", "P(screen-positive)"
    )
    c3 = out["confusion_3class"]
    files["confusion_3class"] = p.confusion_plot(c3["labels"], c3["matrix"], "Three-class",
                                                 plots / "confusion_3class.png")  # fmt: skip
    if out["confusion_screen"] is not None:
        cs = out["confusion_screen"]
        files["confusion_screen"] = p.confusion_plot(
            cs["labels"], cs["matrix"], "At the operating point", plots / "confusion_screen.png"
        )
    return files


def _view_plots(pred: ViewPredictions, out: dict[str, Any], plots: Path) -> dict[str, str]:
    from echoscreen.evaluate import plots as p

    files: dict[str, str] = {}
    cv, cd = out["confusion_view"], out["confusion_doppler"]
    files["confusion_view"] = p.confusion_plot(cv["labels"], cv["matrix"], "Views",
                                               plots / "confusion_view.png")  # fmt: skip
    files["confusion_doppler"] = p.confusion_plot(cd["labels"], cd["matrix"], "Doppler",
                                                  plots / "confusion_doppler.png")  # fmt: skip
    cal = out["view_calibration"]
    files["calibration"] = p.reliability_plot(
        cal["curve"], cal["ece"]["value"], plots / "calibration.png", "top-view confidence"
    )
    if out["doppler"]["auroc"]["value"] is not None:
        kd = pred.doppler >= 0
        files["roc"] = p.roc_plot({"doppler": (pred.doppler[kd], pred.p_doppler[kd])}, None,
                                  plots / "roc.png")  # fmt: skip
    return files


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fitted_calibration(run: Path) -> dict[str, Any] | None:
    """``RUN/calibration.json`` (the temperatures fit() fitted on validation), or None."""
    path = run / "calibration.json"
    if not path.is_file():
        return None
    try:
        fitted: dict[str, Any] = json.loads(path.read_text())
        return fitted if all("temperature" in fitted[k] for k in ("screen", "class3")) else None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise EvaluateError(
            f"{path} is not a calibration file ({exc}); rerun the training "
            "or delete it to report uncalibrated probabilities"
        ) from exc


def evaluate_run(run: Path, split: str = "test", cfg: EvalConfig | None = None) -> dict[str, Any]:
    """Evaluate ``RUN/predictions_{split}.json``; write ``metrics.json`` and ``report.html``.

    The operating point (rhd task) is chosen on ``RUN/predictions_val.json``. The task is
    the ``task`` in ``RUN/config.json`` or, failing that, told from the records.

    Args:
        run: the run folder that ``echoscreen train`` wrote.
        split: the split to report on ("test" by default; "val" reports on validation).
        cfg: bootstrap size/seed, sensitivity target and calibration bins.

    Returns:
        The metrics written to ``metrics.json`` (see docs/evaluate.md).

    Raises:
        EvaluateError: the run folder or a prediction file is missing or ill-formed.
    """
    from echoscreen.evaluate.report import write_report

    cfg = cfg or EvalConfig()
    run = Path(run)
    if not run.is_dir():
        what = f"{run} is a file, not a run folder" if run.exists() else \
            f"run folder {run} does not exist"  # fmt: skip
        raise EvaluateError(f"{what}; pass the --run folder of an `echoscreen train` run")
    test_path = run / f"predictions_{split}.json"
    have = sorted(p.name[len("predictions_"):-len(".json")] for p in run.glob("predictions_*.json"))
    if not test_path.is_file() and have:  # a trained run: the --split is wrong, not the run
        raise EvaluateError(f"{test_path} does not exist; this run has predictions for the "
                            f"split(s) {', '.join(have)}: pass --split one of them")  # fmt: skip
    records = load_records(test_path)
    task = detect_task(records, config_task(run))
    head: dict[str, Any] = {"task": task, "split": split, "run": str(run),
                            "bootstrap": {"n": cfg.n_boot, "seed": cfg.seed,
                                          "method": "stratified percentile bootstrap"}}  # fmt: skip
    with _staged(run) as stage:
        out = _evaluate(run, task, head, records, test_path, cfg, stage / PLOTS)
        (stage / "metrics.json").write_text(json.dumps(out, indent=2) + "\n")
        write_report(out, stage / "report.html")
        _install(stage, run, [v.split("/", 1)[1] for v in out["plots"].values()])
    return dict(out)


@contextlib.contextmanager
def _staged(run: Path) -> Iterator[Path]:
    """A staging folder inside ``run``, removed afterwards, whatever happened."""
    try:
        stage = Path(tempfile.mkdtemp(prefix=".evaluate-", dir=run))
    except OSError as exc:
        raise EvaluateError(f"cannot write into the run folder {run} ({exc.strerror}); "
                            "evaluate a copy of it, or one you may write to") from exc  # fmt: skip
    try:
        (stage / PLOTS).mkdir()
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _install(stage: Path, run: Path, plot_files: list[str]) -> None:
    """Move the staged outputs into ``run``: plots, then the report, metrics.json last.

    Everything was written before anything is replaced, so a failure while writing
    (a full disk, a folder that is not writable) leaves the run's outputs as they were.
    """
    (run / PLOTS).mkdir(exist_ok=True)
    for name in plot_files:
        os.replace(stage / PLOTS / name, run / PLOTS / name)
    os.replace(stage / "report.html", run / "report.html")
    os.replace(stage / "metrics.json", run / "metrics.json")


def _evaluate(run: Path, task: str, head: dict[str, Any], records: list[dict[str, Any]],
              test_path: Path, cfg: EvalConfig, plots: Path) -> dict[str, Any]:  # fmt: skip
    """The metrics of the run, its plots written into ``plots``."""
    if task == "rhd":
        test = parse_rhd(test_path, records)
        val_path = run / "predictions_val.json"
        val = parse_rhd(val_path, load_records(val_path))
        out = _clean({**head, **rhd_metrics(val, test, cfg)})
        fitted = _fitted_calibration(run)
        for key, part in (("calibration", "screen"), ("calibration_3class", "class3")):
            out[key]["post_calibration"] = fitted is not None
            out[key]["temperature"] = None if fitted is None else fitted[part]["temperature"]
        out["calibration_fit"] = fitted
        files = _rhd_plots(test, out, plots)
    else:
        views = parse_view(test_path, records)
        out = _clean({**head, **view_metrics(views, cfg)})
        files = _view_plots(views, out, plots)
    out["plots"] = {k: f"{PLOTS}/{v}" for k, v in files.items()}
    out["report"] = "report.html"
    return dict(out)
