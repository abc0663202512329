"""``publish``: two training runs (view + rhd) in, one immutable screening package out.

Everything is written into a hidden temporary folder next to the target, checked
(ONNX against torch), hashed into the MANIFEST, made read-only, and only then renamed
to ``REGISTRY/NAME/VERSION``: a reader sees either no package or a complete one, and an
existing version is never touched.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from echoscreen.dicom.preprocess import PreprocessSpec
from echoscreen.errors import EchoscreenError, RegistryError
from echoscreen.models import LABELS, RHD_VIEWS, VIEWS, ModelConfig
from echoscreen.registry.manifest import write_manifest
from echoscreen.registry.package import FORMAT, PACKAGE_JSON, TASKS, check_name, package_dir

#: the views that show each valve; a decision needs an evidence clip of each group
REQUIRED_VIEWS: dict[str, tuple[str, ...]] = {
    "mitral valve": ("plax", "psax_mv", "a4c"),
    "aortic valve": ("plax", "psax_av", "a5c"),
}


@dataclass(frozen=True)
class PublishConfig:
    """What to publish and how.

    Attributes:
        rhd_run: run folder of an ``echoscreen train rhd`` run.
        view_run: run folder of an ``echoscreen train view`` run.
        registry: the registry folder (created if missing).
        name, version: the package is ``REGISTRY/NAME/VERSION``.
        min_view_confidence: a clip is RHD evidence only if its predicted view (one of
            RHD_VIEWS) has at least this softmax probability.
        tolerance: largest |torch - onnxruntime| output difference accepted.
        spec: the stored clips' shape, for runs that do not record it (``clips.json``)
            and trained on a remote site; None: from the runs (fps 30, the ingest default).
    """

    rhd_run: Path
    view_run: Path
    registry: Path
    name: str
    version: str
    min_view_confidence: float = 0.5
    tolerance: float = 1e-4
    spec: PreprocessSpec | None = None


def read_run(run: Path, task: str) -> tuple[dict[str, Any], dict[str, Any], int]:
    """``(train config dict, best state_dict, best epoch)`` of a finished run.

    Raises:
        RegistryError: not a run folder, wrong task, or no readable ``best.pt``.
    """
    import torch

    run = Path(run)
    if not (run / "config.json").is_file():
        raise RegistryError(f"{run} is not a training run folder (it has no config.json); pass "
                            f"the --run folder of `echoscreen train {task}`")  # fmt: skip
    cfg = run_json(run / "config.json", "restore it from backup, or train the run again")
    if cfg.get("task") != task:
        raise RegistryError(f"{run} is a {cfg.get('task')!r} run but a {task!r} run is needed "
                            "here (publish RHD_RUN --view-run VIEW_RUN)")  # fmt: skip
    if not (run / "best.pt").is_file():
        raise RegistryError(f"{run} has no best.pt: let the training finish (or --resume it)")
    try:
        best = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated, or some other file: torch raises many kinds
        raise _damaged(run, (str(exc).splitlines() or [type(exc).__name__])[0]) from exc
    if not isinstance(best, dict) or not isinstance(best.get("model"), dict):
        raise _damaged(run, "it holds no model state")
    return cfg, best["model"], int(best.get("epoch", 0))


def run_json(path: Path, hint: str) -> dict[str, Any]:
    """A JSON object a run folder holds (``config.json``, ``clips.json``, ``metrics.json``).

    Raises:
        RegistryError: the file is unreadable, not UTF-8 JSON, or not an object; the
            message names it and ends with ``hint`` (how to mend it).
    """
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8 text
        raise RegistryError(f"{path} is unreadable ({exc}); {hint}") from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"{path} is not a JSON object, as echoscreen writes it; {hint}")
    return doc


def _damaged(run: Path, why: str) -> RegistryError:
    return RegistryError(f"{run / 'best.pt'} is damaged or not a checkpoint of `echoscreen "
                         f"train` ({why}); restore it from backup, or train the run again")


def model_config(cfg: dict[str, Any]) -> ModelConfig:
    """The ModelConfig ``fit`` builds from a run's TrainConfig dict."""
    return ModelConfig(size=cfg.get("model_size", "small"), frames=int(cfg["frames"]),
                       image=int(cfg["size"]), dropout=float(cfg.get("dropout", 0.1)))  # fmt: skip


def stored_spec(runs: list[Path], cfgs: list[dict[str, Any]], given: PreprocessSpec | None,
                ) -> tuple[PreprocessSpec, str | None]:  # fmt: skip
    """``(PreprocessSpec, reader)`` of the stored clips the runs trained on (the same for both).

    From each run's ``clips.json`` (written when its training started). A run made before
    runs recorded it is read from its local site (the shape, and the reader where the
    site recorded one), or the shape is ``given`` (``--clip-frames``/``--clip-size``).

    Raises:
        RegistryError: the runs trained on clips of different shapes or readers, or the
            shape cannot be known.
    """
    from echoscreen.data import LocalSite

    found: set[tuple[tuple[int, ...] | None, str | None]] = set()
    for run, cfg in zip(runs, cfgs, strict=True):
        if (run / "clips.json").is_file():
            hint = "delete it to read the shape from the run's site (or --clip-frames/--clip-size)"
            rec = run_json(run / "clips.json", hint)
            shape = rec.get("shape")
            if shape is not None and not (isinstance(shape, list) and len(shape) == 4
                                          and all(isinstance(n, int) for n in shape)):  # fmt: skip
                raise RegistryError(f"{run / 'clips.json'}: 'shape' is not [3, T, S, S] or null; "
                                    f"{hint}")  # fmt: skip
            found.add((tuple(shape) if shape else None, rec.get("reader")))
            continue
        data = str(cfg["data"])
        if data.startswith(("https://", "http://")) or not Path(data).is_dir():
            found.add((None, None))
            continue
        clips = LocalSite(Path(data)).clips(str(cfg["dataset"]), None)
        if not clips:
            raise RegistryError(f"dataset {cfg['dataset']!r} of {data} has no clips")
        readers = {c.reader for c in clips}
        found.add((tuple(clips[0].shape), readers.pop() if len(readers) == 1 else None))
    if len(found) != 1:
        raise RegistryError(f"the two runs trained on different stored clips (shape, reader): "
                            f"{sorted(found, key=str)}; train both on the same ingested "
                            "dataset")  # fmt: skip
    shape, reader = found.pop()
    if shape is None:
        if given is None:
            raise RegistryError("the runs do not record their clips' shape, nor can it be read "
                                "from here; give --clip-frames and --clip-size (as ingested)")
        return given, reader
    _, frames, size, _ = shape
    spec = PreprocessSpec(size=int(size), frames=int(frames))
    if given is not None and (given.size, given.frames) != (spec.size, spec.frames):
        raise RegistryError(f"the runs trained on {frames}-frame {size}-px clips, not the "
                            f"--clip-frames {given.frames} --clip-size {given.size} given")
    return spec, reader


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def run_metrics(run: Path, task: str) -> dict[str, Any]:
    """The run's ``metrics.json`` (from ``echoscreen evaluate``), else computed in memory.

    The in-memory path evaluates ``predictions_test.json`` with the operating point chosen
    on ``predictions_val.json`` (default :class:`EvalConfig`), writing nothing into the run.

    Raises:
        RegistryError: neither metrics.json nor usable prediction files.
    """
    path = Path(run) / "metrics.json"
    if path.is_file():
        metrics = run_json(path, f"run `echoscreen evaluate {run}` again (or delete it)")
        if metrics.get("task") == task:
            return metrics
    from echoscreen.evaluate.predictions import load_records, parse_rhd, parse_view
    from echoscreen.evaluate.summary import EvalConfig, rhd_metrics, view_metrics

    cfg, test = EvalConfig(), Path(run) / "predictions_test.json"
    try:
        if task == "rhd":
            val = Path(run) / "predictions_val.json"
            out = rhd_metrics(parse_rhd(val, load_records(val)),
                              parse_rhd(test, load_records(test)), cfg)  # fmt: skip
        else:
            out = view_metrics(parse_view(test, load_records(test)), cfg)
    except EchoscreenError as exc:
        raise RegistryError(f"cannot evaluate {run} ({exc}); run `echoscreen evaluate {run}` "
                            "first") from exc  # fmt: skip
    return {"task": task, "split": "test", "run": str(run), **_jsonable(out)}


def export_checked(model: Any, task: str, mcfg: ModelConfig, path: Path, tol: float) -> float:
    """Export ``model`` to ONNX and compare with torch on two input shapes.

    Returns:
        The largest |torch - onnxruntime| difference seen.

    Raises:
        RegistryError: the difference exceeds ``tol`` (nothing is published).
    """
    from echoscreen.models.onnx import check_onnx, example_inputs, export_onnx

    export_onnx(model, task, mcfg, path)
    worst = max(check_onnx(model, task, path, example_inputs(task, mcfg, 2, 3)),
                check_onnx(model, task, path, example_inputs(task, mcfg, 1, 5, seed=1)))
    if not worst <= tol:
        raise RegistryError(f"the ONNX export of the {task} model disagrees with torch by "
                            f"{worst:.2e} (> tolerance {tol:.0e}); not published")  # fmt: skip
    return worst


def _write_model(tmp: Path, task: str, run: Path, tol: float) -> dict[str, Any]:
    """Write one model's files into ``tmp/task/``; return its package.json entry."""
    import torch

    from echoscreen.models import create_model

    cfg, state, epoch = read_run(run, task)
    mcfg = model_config(cfg)
    model = create_model(task, mcfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise _damaged(Path(run), f"its weights do not fit the {task} network that "
                       "config.json describes") from exc
    model.eval()
    folder = tmp / task
    folder.mkdir()
    torch.save(model.state_dict(), folder / "weights.pt")
    diff = export_checked(model, task, mcfg, folder / "model.onnx", tol)
    (folder / "train_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    metrics = run_metrics(run, task)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return {"weights": f"{task}/weights.pt", "onnx": f"{task}/model.onnx",
            "train_config": f"{task}/train_config.json", "metrics": f"{task}/metrics.json",
            "model_config": {"size": mcfg.size, "frames": mcfg.frames, "image": mcfg.image,
                             "dropout": mcfg.dropout},
            "input": {"frames": int(cfg["frames"]), "size": int(cfg["size"])},
            "best_epoch": epoch, "onnx_max_abs_diff": diff, "onnx_tolerance": tol}  # fmt: skip


def _package_meta(pc: PublishConfig, models: dict[str, Any], spec: PreprocessSpec,
                  reader: str | None, rhd_metrics: dict[str, Any],
                  max_clips: int) -> dict[str, Any]:  # fmt: skip
    from echoscreen import __version__

    op = rhd_metrics.get("operating_point") or {}
    if op.get("threshold") is None:
        raise RegistryError(f"run {pc.rhd_run} has no operating point ({op.get('reason')}); "
                            "it needs screen-positive validation studies: train on a larger "
                            "cohort, then `echoscreen evaluate`")  # fmt: skip
    return {
        "format": FORMAT, "name": pc.name, "version": pc.version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "echoscreen_version": __version__, "models": models,
        "preprocess": {"size": spec.size, "frames": spec.frames, "fps": spec.fps,
                       "reader": reader},
        "operating_point": op, "labels": list(LABELS), "views": list(VIEWS),
        "rhd_views": list(RHD_VIEWS),
        "decision": {"max_clips": max_clips, "min_view_confidence": pc.min_view_confidence,
                     "require": {k: list(v) for k, v in REQUIRED_VIEWS.items()}},
        "sources": {"rhd_run": str(pc.rhd_run), "view_run": str(pc.view_run)},
    }  # fmt: skip


def publish(pc: PublishConfig) -> Path:
    """Publish the two runs as ``REGISTRY/NAME/VERSION`` (immutable, checksummed).

    Returns:
        The package folder.

    Raises:
        RegistryError: the version exists already (it is left untouched), a run is not
            usable, it has no operating point, or an ONNX export disagrees with torch.
            Nothing is left behind: not the temporary folder, nor a ``REGISTRY`` or
            ``REGISTRY/NAME`` folder this call created.
    """
    from echoscreen.registry.card import model_card

    target = package_dir(pc.registry, check_name("package name", pc.name), pc.version)
    if target.exists():
        raise RegistryError(f"{pc.name}:{pc.version} is already published at {target}; packages "
                            "are immutable: publish under a new --version")  # fmt: skip
    made = _make_dirs(target.parent)
    tmp: Path | None = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".publish-{pc.version}-", dir=target.parent))
        rhd_cfg, view_cfg = read_run(pc.rhd_run, "rhd")[0], read_run(pc.view_run, "view")[0]
        runs = [Path(pc.rhd_run), Path(pc.view_run)]
        spec, reader = stored_spec(runs, [rhd_cfg, view_cfg], pc.spec)
        models = {t: _write_model(tmp, t, pc.rhd_run if t == "rhd" else pc.view_run,
                                  pc.tolerance) for t in TASKS}  # fmt: skip
        rhd_m = json.loads((tmp / "rhd" / "metrics.json").read_text())
        view_m = json.loads((tmp / "view" / "metrics.json").read_text())
        meta = _package_meta(pc, models, spec, reader, rhd_m, int(rhd_cfg.get("max_clips", 8)))
        (tmp / PACKAGE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "model_card.md").write_text(model_card(meta, rhd_m, view_m))
        write_manifest(tmp)
        _freeze(tmp)
        if target.exists():
            raise RegistryError(f"{pc.name}:{pc.version} was published meanwhile; "
                                "use a new version")
        os.rename(tmp, target)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise
    return target


def _make_dirs(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created, deepest first."""
    made = []
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        made.append(p)
    folder.mkdir(parents=True, exist_ok=True)
    return made


def _remove_empty(folders: list[Path]) -> None:
    """Remove these folders (deepest first) while they are empty: a failed publish leaves
    no ``REGISTRY/NAME`` behind that it made, and never one another publish wrote into."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            return


def _freeze(root: Path) -> None:
    """Make every file read-only (0444) and the folder 0755, then fsync the MANIFEST."""
    for p in root.rglob("*"):
        if p.is_file():
            p.chmod(0o444)
    root.chmod(0o755)
    fd = os.open(root / "MANIFEST", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
