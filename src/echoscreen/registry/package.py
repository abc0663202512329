"""A published model package on disk: naming, layout, and loading with checksum checks.

Layout of ``REGISTRY/NAME/VERSION/`` (see docs/registry.md)::

    package.json          what the package is: models, input shapes, preprocessing spec,
                          operating point, decision rules, provenance
    MANIFEST              sha256 of every other file (sha256sum format)
    model_card.md         intended use, data, metrics with CIs, subgroup gaps, limitations
    view/weights.pt       state_dict of the view classifier (torch.save, tensors only)
    view/model.onnx       its ONNX export, checked against torch when published
    view/train_config.json, view/metrics.json
    rhd/weights.pt, rhd/model.onnx, rhd/train_config.json, rhd/metrics.json
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echoscreen.dicom.preprocess import PreprocessSpec
from echoscreen.errors import RegistryError
from echoscreen.models import ModelConfig
from echoscreen.registry.manifest import verify_manifest

#: package.json format version
FORMAT = 1
PACKAGE_JSON = "package.json"
#: the two models a screening package holds
TASKS = ("view", "rhd")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe package name or version, else raise RegistryError."""
    if not _NAME.fullmatch(value) or ".." in value:
        raise RegistryError(
            f"{kind} {value!r} is not allowed; use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. rhd-screen, 1.0.0)"
        )
    return value


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``"NAME:VERSION"`` into its parts (both checked with :func:`check_name`)."""
    name, sep, version = ref.partition(":")
    if not sep:
        raise RegistryError(f"model {ref!r} lacks a version; write NAME:VERSION, e.g. rhd:1.0")
    return check_name("package name", name), check_name("version", version)


def package_dir(registry: Path, name: str, version: str) -> Path:
    """``registry/name/version`` (names checked)."""
    return Path(registry) / check_name("package name", name) / check_name("version", version)


@dataclass(frozen=True)
class ModelPackage:
    """A verified, loaded package (read-only view of its ``package.json``).

    Attributes:
        root: the package folder.
        meta: the parsed ``package.json``.
    """

    root: Path
    meta: dict[str, Any]

    @property
    def ref(self) -> str:
        """``NAME:VERSION``."""
        return f"{self.meta['name']}:{self.meta['version']}"

    @property
    def spec(self) -> PreprocessSpec:
        """How DICOM cines become stored clips ``uint8 (3, T, S, S)`` (as at training)."""
        p = self.meta["preprocess"]
        return PreprocessSpec(size=int(p["size"]), frames=int(p["frames"]), fps=float(p["fps"]))

    @property
    def reader(self) -> str | None:
        """The clip reader (``echoscreen.deid.READER``) that made the models' training clips,
        or ``None`` when the runs did not record it."""
        value = self.meta["preprocess"].get("reader")
        return None if value is None else str(value)

    @property
    def threshold(self) -> float:
        """Operating point: a study is screen-positive when p(screen-positive) >= this."""
        return float(self.meta["operating_point"]["threshold"])

    @property
    def decision(self) -> dict[str, Any]:
        """Decision rules: ``max_clips``, ``min_view_confidence``, ``require`` (group -> views)."""
        return dict(self.meta["decision"])

    def model_config(self, task: str) -> ModelConfig:
        """The :class:`ModelConfig` the ``task`` model was built with."""
        return ModelConfig(**self._model(task)["model_config"])

    def input_shape(self, task: str) -> tuple[int, int]:
        """``(frames T', size S')`` of the ``task`` model's input (the train transform's)."""
        inp = self._model(task)["input"]
        return int(inp["frames"]), int(inp["size"])

    def path(self, task: str, what: str) -> Path:
        """Absolute path of a model's ``weights`` or ``onnx`` file."""
        return self.root / self._model(task)[what]

    def load_torch(self, task: str) -> Any:
        """The ``task`` model as a torch module in eval mode, weights from ``weights.pt``.

        Raises:
            RegistryError: the weights do not load (a damaged file whose checksum was
                rewritten) or do not fit this version's network (the package was published
                by an echoscreen whose model code differed).
        """
        import torch

        from echoscreen.models import create_model

        model = create_model(task, self.model_config(task))
        path = self.path(task, "weights")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or foreign: torch raises many kinds
            raise unloadable(path, "torch", exc) from exc
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise RegistryError(
                f"package {self.ref}: its {task} weights do not fit this echoscreen's {task} "
                "network (published by a version with other model code); publish the runs "
                "again with this version, or use its ONNX backend"
            ) from exc
        return model.eval()

    def _model(self, task: str) -> dict[str, Any]:
        try:
            entry: dict[str, Any] = self.meta["models"][task]
        except KeyError as exc:
            raise RegistryError(f"package {self.ref} has no {task!r} model") from exc
        return entry


def unloadable(path: Path, runtime: str, exc: BaseException) -> RegistryError:
    """The error for a package file that passed its checksum but ``runtime`` cannot load."""
    first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    return RegistryError(f"{path} does not load in {runtime} ({first}); the package is "
                         "damaged: restore it from a backup or publish a new version")  # fmt: skip


def load_package(registry: Path, ref: str) -> ModelPackage:
    """Open ``REGISTRY/NAME/VERSION`` after checking every file against its MANIFEST.

    Args:
        registry: the registry folder.
        ref: ``"NAME:VERSION"``.

    Returns:
        The verified :class:`ModelPackage`.

    Raises:
        RegistryError: no such package (lists the versions there are), a checksum differs,
            a file is missing or added, or ``package.json`` is unreadable.
    """
    name, version = parse_ref(ref)
    root = package_dir(registry, name, version)
    if not Path(registry).is_dir():
        what = "is not a folder" if Path(registry).exists() else "does not exist"
        raise RegistryError(f"registry {registry} {what}; pass --registry the folder that "
                            "`echoscreen publish` wrote the package into")  # fmt: skip
    if not root.is_dir():
        known = sorted(p.name for p in (Path(registry) / name).glob("*")
                       if p.is_dir() and not p.name.startswith("."))  # fmt: skip
        have = f"versions of {name}: {', '.join(known)}" if known else f"no package {name!r}"
        raise RegistryError(f"no model {ref} in registry {registry} ({have}); "
                            "publish it with `echoscreen publish`")  # fmt: skip
    verify_manifest(root)
    try:
        meta = json.loads((root / PACKAGE_JSON).read_text())
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8 text
        raise RegistryError(f"{root / PACKAGE_JSON} is unreadable ({exc}); restore the package "
                            "from a backup or publish a new version") from exc  # fmt: skip
    if not isinstance(meta, dict):
        raise RegistryError(f"{root / PACKAGE_JSON} is not a package description (a JSON "
                            "object); restore the package from a backup or publish a new "
                            "version")  # fmt: skip
    if meta.get("format") != FORMAT:
        raise RegistryError(f"package {ref} has format {meta.get('format')!r}; this echoscreen "
                            f"reads format {FORMAT}: upgrade echoscreen")  # fmt: skip
    package = ModelPackage(root=root, meta=meta)
    _check_fields(package)
    return package


def _check_fields(package: ModelPackage) -> None:
    """Read every field screening uses once, so that a ``package.json`` edited (and its
    checksum rewritten) into unusable values is refused here, naming the file, rather than
    failing halfway through a study.

    Raises:
        RegistryError: a field is missing or of the wrong type, or the threshold is not a
            probability.
    """
    where = package.root / PACKAGE_JSON
    try:
        _ = package.ref, package.spec, package.reader
        threshold = package.threshold
        rules = package.decision
        float(rules["min_view_confidence"]), int(rules["max_clips"])
        _ = {str(group): [str(v) for v in views] for group, views in rules["require"].items()}
        for task in TASKS:
            package.model_config(task), package.input_shape(task)
            package.path(task, "weights"), package.path(task, "onnx")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RegistryError(f"{where} lacks a field or holds one of the wrong type "
                            f"({type(exc).__name__}: {exc}); restore the package from a backup "
                            "or publish a new version") from exc  # fmt: skip
    if not 0.0 <= threshold <= 1.0:  # also refuses NaN
        raise RegistryError(f"{where}: the operating point's threshold {threshold} is not a "
                            "probability; restore the package from a backup or publish a new "
                            "version")  # fmt: skip
