"""``Screener``: one study's DICOM files in, per-clip views and a study decision out.

Steps (see docs/registry.md for the rules and the JSON schema):

1. each file is decoded and de-identified **in memory** (header profile and Clean Pixel
   Data, under a random key thrown away afterwards) and preprocessed to the package's
   stored-clip spec; unreadable files are reported and skipped;
2. the view model classifies every clip (view, confidence, colour Doppler);
3. evidence clips are those whose *predicted* view is an RHD view with at least the
   package's ``min_view_confidence``, chosen as in training (colour Doppler first,
   round robin over views, at most ``max_clips``);
4. with no evidence clip, or without a clip of every required valve group, the study is
   ``inconclusive`` (with the reason); otherwise the rhd model gives p(screen-positive)
   and the three-class probabilities, and the decision is ``screen-positive`` when
   p >= the package's operating point, else ``normal``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echoscreen.dicom.preprocess import PreprocessSpec
from echoscreen.errors import EchoscreenError, RegistryError
from echoscreen.models import LABELS, RHD_VIEWS, VIEWS
from echoscreen.registry.package import TASKS, ModelPackage, load_package
from echoscreen.screen.backends import Backend, make_backend

log = logging.getLogger(__name__)
_UNRECORDED_WARNED: set[Path] = set()

SCHEMA = "echoscreen.screen/1"
#: clips per view-model batch
VIEW_BATCH = 16


@dataclass
class ClipResult:
    """One readable clip of the study.

    Attributes:
        index: position among the readable clips (0-based, in file-name order).
        file: the file's name relative to the study path.
        pixels: stored-clip tensor ``uint8 (3, T, S, S)`` (not part of the output).
        view: predicted view code; confidence: its softmax probability.
        p_view: softmax over VIEWS; doppler: predicted colour Doppler; p_doppler: its
            probability.
        evidence: the clip was given to the rhd model; attention: its pooling weight;
            p_clip_screen: its own p(screen-positive) (evidence clips only).
    """

    index: int
    file: str
    pixels: np.ndarray = field(repr=False)
    view: str = ""
    confidence: float = 0.0
    p_view: list[float] = field(default_factory=list)
    doppler: bool = False
    p_doppler: float = 0.0
    evidence: bool = False
    attention: float | None = None
    p_clip_screen: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (no pixels)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "pixels"}
        d["p_view"] = dict(zip(VIEWS, self.p_view, strict=True))
        return d


@dataclass
class ScreenResult:
    """The screening result of one study (see :meth:`to_json` for the document)."""

    model: str
    backend: str
    threshold: float
    decision: str = "inconclusive"
    reason: str | None = None
    p_screen: float | None = None
    p3: dict[str, float] | None = None
    clips: list[ClipResult] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    required: dict[str, bool] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The documented JSON document (schema ``echoscreen.screen/1``)."""
        ev = [c for c in self.clips if c.evidence]
        return {
            "schema": SCHEMA, "model": self.model, "backend": self.backend,
            "decision": self.decision, "reason": self.reason, "p_screen": self.p_screen,
            "p3": self.p3, "threshold": self.threshold,
            "evidence": {"clips": [c.index for c in ev], "views": [c.view for c in ev],
                         "required": self.required},
            "clips": [c.to_json() for c in self.clips], "skipped": self.skipped,
            "warnings": self.warnings,
        }  # fmt: skip


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _why(exc: Exception) -> str:
    """A reason that names no header value: our own messages, else only the error type."""
    if isinstance(exc, EchoscreenError):
        return str(exc)[:300]
    return f"unreadable ({type(exc).__name__})"


def read_file(
    data: bytes, spec: PreprocessSpec, key: bytes, frames: Sequence[int] | None = None
) -> tuple[np.ndarray | None, str, str | None]:
    """Decode, de-identify (in memory) and preprocess one DICOM file.

    A top-level function so that process pools can run it (the service does).

    Args:
        data: the file's bytes.
        spec: the package's preprocessing spec.
        key: pseudonymisation secret (>= 16 bytes); the same key for one study's files
            gives them the same pseudonymous StudyInstanceUID.
        frames: the stored-clip frames wanted (indices into ``range(spec.frames)``;
            :meth:`Screener.model_frames`): only these are decoded and made, each the same
            as in the whole clip; the others are left black. None makes all.

    Returns:
        ``(pixels, study, reason)``: the stored-clip tensor ``uint8 (3, T, S, S)`` and the
        pseudonymous StudyInstanceUID, or ``(None, "", reason)`` when the file is unusable
        (the reason names no header value).
    """
    from echoscreen.deid import Deidentifier, model_clip
    from echoscreen.dicom import load_dataset

    try:
        ds = load_dataset(data)
        deid = Deidentifier(key)
        tensor = model_clip(ds, spec, deid.policy, frames)  # those frames only, cleaned
        study = deid.study_uid(ds)  # nothing else of the header leaves this function
    except Exception as exc:  # one bad file must not stop the study
        return None, "", _why(exc)
    if frames is None:
        return tensor.pixels, study, None
    pixels = np.zeros((3, spec.frames, spec.size, spec.size), np.uint8)
    pixels[:, list(frames)] = tensor.pixels
    return pixels, study, None


def model_frames(package: ModelPackage) -> list[int]:
    """Stored-clip frames (sorted, in ``range(spec.frames)``) that screening feeds a model.

    The union of the view and rhd models' centred windows (as :meth:`Screener._inputs`
    takes them): e.g. every other frame when 16 of 32 stored frames are used. Frames
    outside it never reach a model, so :func:`read_file` need not decode them.
    """
    from echoscreen.train.transforms import frame_indices, max_offset

    total, picked = package.spec.frames, set[int]()
    for task in TASKS:
        n = package.input_shape(task)[0]
        picked.update(int(i) for i in frame_indices(total, n, max_offset(total, n) // 2))
    return sorted(picked)


def check_reader(package: ModelPackage) -> ModelPackage:
    """``package``, if it may screen with this echoscreen's clip reader.

    A model sees only clips like those it was trained on: a package whose training clips
    came from another reader (decode, cleaning or preprocessing that made other pixels)
    is refused. One that does not record its reader is used, with a warning logged (once
    per package and process).

    Raises:
        RegistryError: the package's reader is not :data:`echoscreen.deid.READER`.
    """
    from echoscreen.deid import READER

    if package.reader is None:
        if package.root in _UNRECORDED_WARNED:
            return package
        _UNRECORDED_WARNED.add(package.root)
        log.warning("%s does not record the clip reader of its training clips; if they were "
                    "ingested by another echoscreen version, decisions near the threshold may "
                    "differ from the validated ones", package.ref)  # fmt: skip
    elif package.reader != READER:
        raise RegistryError(
            f"{package.ref} was trained on clips made by clip reader {package.reader!r}, but "
            f"this echoscreen makes clips with {READER!r}, which differ: its decisions would "
            "not be the validated ones. Screen with the echoscreen version that published it, "
            "or re-ingest the training studies with this one and train and publish again"
        )
    return package


class Screener:
    """Screens studies with one verified package through one backend.

    Args:
        package: a package from :func:`echoscreen.registry.load_package`.
        backend: the inference backend (default: ONNX Runtime on the CPU).
    """

    def __init__(self, package: ModelPackage, backend: Backend | None = None) -> None:
        check_reader(package)
        self.package = package
        self.backend = backend if backend is not None else make_backend(package, "onnx")
        #: the stored-clip frames the models see, the only ones :meth:`read` decodes
        #: (None: every frame; the models' inputs and the results are the same)
        self.frames: list[int] | None = model_frames(package)

    @classmethod
    def open(cls, registry: Path, ref: str, backend: str = "onnx", threads: int = 0) -> Screener:
        """Load and verify ``NAME:VERSION`` from ``registry`` and open a ``backend`` for it."""
        package = check_reader(load_package(registry, ref))
        return cls(package, make_backend(package, backend, threads))

    def read(
        self, items: Iterable[tuple[str, bytes]], pool: Executor | None = None
    ) -> tuple[list[ClipResult], list[dict[str, str]], int]:
        """De-identify (in memory) and preprocess each file (:func:`read_file`).

        Args:
            items: ``(name, bytes)`` of the study's files.
            pool: reads the files in parallel (the service's process pool); None reads
                them one at a time, holding one file in memory at once.

        Returns:
            ``(clips, skipped, n_studies)``: readable clips, ``{"file", "reason"}`` for the
            others, and how many distinct studies the clips came from.
        """
        # one random key per call: pseudonyms unlinkable to anything, then dropped
        work = functools.partial(read_file, spec=self.package.spec, key=os.urandom(32),
                                 frames=self.frames)  # fmt: skip
        if pool is None:
            outcomes: Iterable[tuple[str, Any]] = ((n, work(d)) for n, d in items)
        else:
            files = list(items)
            read = pool.map(work, [d for _, d in files])
            outcomes = zip([n for n, _ in files], read, strict=True)
        clips: list[ClipResult] = []
        skipped: list[dict[str, str]] = []
        studies: set[str] = set()
        for name, (pixels, study, reason) in outcomes:
            if pixels is None:
                skipped.append({"file": name, "reason": reason or "unreadable"})
                continue
            studies.add(study)
            clips.append(ClipResult(index=len(clips), file=name, pixels=pixels))
        return clips, skipped, len(studies)

    def _inputs(self, task: str, clips: list[ClipResult]) -> np.ndarray:
        """Model input ``float32 (N, 3, T', S', S')``: centred windows, as evaluation."""
        import torch

        from echoscreen.train.transforms import windows

        frames, size = self.package.input_shape(task)
        batch = torch.from_numpy(np.stack([c.pixels for c in clips]))
        return windows(batch, frames, size, [None] * len(clips)).numpy()

    def classify(self, clips: list[ClipResult]) -> None:
        """Fill each clip's view, confidence, p_view, doppler and p_doppler."""
        for start in range(0, len(clips), VIEW_BATCH):
            batch = clips[start : start + VIEW_BATCH]
            out = self.backend.run("view", {"clips": self._inputs("view", batch)})
            probs, p_dop = _softmax(out["view"]), _sigmoid(out["doppler"])
            for c, p, d in zip(batch, probs, p_dop, strict=True):
                k = int(np.argmax(p))
                c.view, c.confidence, c.p_view = VIEWS[k], float(p[k]), [float(v) for v in p]
                c.p_doppler, c.doppler = float(d), bool(d >= 0.5)

    def choose_evidence(self, clips: list[ClipResult]) -> list[ClipResult]:
        """Evidence clips, chosen as in training (``echoscreen.train.select_clips``)."""
        from echoscreen.data.sources import ClipInfo
        from echoscreen.train.data import select_clips

        rules = self.package.decision
        low = float(rules["min_view_confidence"])
        ok = [c for c in clips if c.view in RHD_VIEWS and c.confidence >= low]
        infos = [ClipInfo(id=f"{c.index:06d}", study="study", split=None, label=None, view=c.view,
                          doppler=c.doppler, n_frames=0, fps=0.0, shape=tuple(c.pixels.shape))
                 for c in ok]  # fmt: skip
        chosen = {int(i.id) for i in select_clips(infos, int(rules["max_clips"]), seed=0)}
        return [c for c in clips if c.index in chosen]

    def decide(self, result: ScreenResult) -> None:
        """Choose evidence, check the required views, run the rhd model, set the decision."""
        rules = self.package.decision
        evidence = self.choose_evidence(result.clips)
        seen = {c.view for c in evidence}
        result.required = {g: bool(seen & set(v)) for g, v in rules["require"].items()}
        missing = [g for g, ok in result.required.items() if not ok]
        if not result.clips:
            result.reason = "no readable clip in the study"
        elif not evidence:
            result.reason = (f"no clip of an RHD view ({', '.join(RHD_VIEWS)}) with view "
                             f"confidence >= {rules['min_view_confidence']:.2f}")  # fmt: skip
        elif missing:
            views = "; ".join(f"{g}: {', '.join(rules['require'][g])}" for g in missing)
            result.reason = f"no evidence clip showing the {' or the '.join(missing)} ({views})"
        else:
            self._run_rhd(result, evidence)

    def _run_rhd(self, result: ScreenResult, evidence: list[ClipResult]) -> None:
        """p(screen-positive), three-class probabilities and the decision from the evidence."""
        x = self._inputs("rhd", evidence)[None]
        views = np.array([[VIEWS.index(c.view) for c in evidence]], dtype=np.int64)
        mask = np.ones(views.shape, dtype=bool)
        out = self.backend.run("rhd", {"clips": x, "mask": mask, "views": views})
        p = float(_sigmoid(out["screen"])[0])
        result.p_screen = p
        result.p3 = {k: float(v) for k, v in zip(LABELS, _softmax(out["class3"])[0], strict=True)}
        clip_p = _sigmoid(out["clip_screen"][0])
        for c, a, s in zip(evidence, out["attention"][0], clip_p, strict=True):
            c.evidence, c.attention, c.p_clip_screen = True, float(a), float(s)
        result.decision = "screen-positive" if p >= result.threshold else "normal"

    def screen(self, items: Iterable[tuple[str, bytes]],
               pool: Executor | None = None) -> ScreenResult:  # fmt: skip
        """Screen one study given as ``(name, bytes)`` files (``pool``: see :meth:`read`)."""
        result = ScreenResult(model=self.package.ref, backend=self.backend.name,
                              threshold=self.package.threshold)  # fmt: skip
        result.clips, result.skipped, n_studies = self.read(items, pool)
        if n_studies > 1:
            result.warnings.append(f"the files belong to {n_studies} different studies; "
                                   "screen one study at a time")  # fmt: skip
        self.classify(result.clips)
        self.decide(result)
        return result

    def screen_path(self, path: Path) -> ScreenResult:
        """Screen the study at ``path`` (folder, zip or one file; see :func:`iter_study`)."""
        from echoscreen.screen.inputs import iter_study

        return self.screen(iter_study(Path(path)))
