"""labels.csv and clips.csv: study labels/demographics and clip annotations to join on ingest.

Both files are keyed by ORIGINAL DICOM UIDs (what the scanner or the phantom
wrote); the pipeline looks rows up before pseudonymisation and stores only the
values, never the keys. Columns:

- ``labels.csv``: ``study_instance_uid``, ``label`` (normal/borderline/definite or
  empty), and optionally ``sex``, ``age_years``, ``weight_kg``, ``height_cm`` (numbers
  >= 0, or empty).
  ``patient_id`` and any other column are ignored (identifying, not stored).
- ``clips.csv``: ``sop_instance_uid``, and optionally ``view`` (one of the view
  classifier's :data:`echoscreen.vocab.VIEWS`, any case, or empty), ``doppler``
  (1/0, true/false, yes/no or y/n, any case), ``findings``, and ``finding_*``/``*_cm``/
  ``*_mm`` columns (stored together as JSON). Other columns (paths, ids) are ignored.

A UID on two rows of one file must say the same thing on both, else ingest is refused.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from echoscreen.errors import IngestError
from echoscreen.vocab import LABELS, VIEWS

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n"}
_Row = TypeVar("_Row")


@dataclass(frozen=True)
class StudyLabel:
    """What labels.csv says about one study (None: not given)."""

    label: str | None = None
    sex: str | None = None
    age_years: float | None = None
    weight_kg: float | None = None
    height_cm: float | None = None


@dataclass(frozen=True)
class ClipLabel:
    """What clips.csv says about one clip (None: not given)."""

    view: str | None = None
    doppler: bool | None = None
    findings: str | None = None


@dataclass(frozen=True)
class RowLines:
    """Where the rows of one CSV file are: their line numbers by key (original UID).

    Attributes:
        path: the file.
        key: its key column (``study_instance_uid`` or ``sop_instance_uid``).
        by_key: line numbers of the rows of each key; ``""`` holds rows without a key.
    """

    path: Path
    key: str
    by_key: dict[str, list[int]]

    @property
    def what(self) -> str:
        """What a row describes: ``study`` or ``clip``."""
        return "study" if self.key == "study_instance_uid" else "clip"

    def unmatched(self, matched: set[str]) -> list[int]:
        """Line numbers, in order, of the rows whose key is not in ``matched``."""
        return sorted(n for key, lines in self.by_key.items() if key not in matched
                      for n in lines)  # fmt: skip


@dataclass(frozen=True)
class Unmatched:
    """Rows of one CSV file that matched no study (clip) an ingest run read.

    Attributes:
        rows: the file's rows.
        lines: line numbers of those that matched nothing, in order.
    """

    rows: RowLines
    lines: list[int]


@dataclass
class Annotations:
    """Rows of labels.csv and clips.csv keyed by original UID, and where they are.

    Attributes:
        studies, clips: what each row says, by original study / SOP instance UID.
        study_rows, clip_rows: the line numbers of labels.csv / clips.csv rows (None:
            no such file), to report the rows that matched nothing.
    """

    studies: dict[str, StudyLabel] = field(default_factory=dict)
    clips: dict[str, ClipLabel] = field(default_factory=dict)
    study_rows: RowLines | None = None
    clip_rows: RowLines | None = None

    def unmatched(self, studies: set[str], clips: set[str]) -> list[Unmatched]:
        """The rows of each file whose UID is not among ``studies`` (``clips``), the
        original UIDs a run read; files whose every row matched are left out."""
        found = [(rows, rows.unmatched(seen)) for rows, seen in
                 ((self.study_rows, studies), (self.clip_rows, clips)) if rows is not None]
        return [Unmatched(rows, lines) for rows, lines in found if lines]  # fmt: skip


def _rows(path: Path, key: str) -> list[tuple[int, dict[str, str]]]:
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or key not in reader.fieldnames:
                raise IngestError(f"{path} has no {key!r} column; see `echoscreen ingest --help`")
            return [(i + 2, {k: (v or "").strip() for k, v in row.items() if k}) for i, row in
                    enumerate(reader)]  # fmt: skip
    except OSError as exc:
        raise IngestError(f"cannot read {path} ({exc.strerror}); check the path") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise IngestError(f"{path} is not a readable UTF-8 CSV file ({exc})") from exc


def _number(path: Path, line: int, column: str, text: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise IngestError(f"{path} line {line}: {column} {text!r} is not a number") from exc
    if not math.isfinite(value) or value < 0:  # nan was stored as NULL, inf and -40 as given
        raise IngestError(f"{path} line {line}: {column} {text!r} is not a number >= 0; "
                          "leave it empty when unknown")  # fmt: skip
    return value


def _study_row(path: Path, line: int, row: dict[str, str]) -> StudyLabel:
    label = row.get("label", "").lower() or None
    if label is not None and label not in LABELS:
        raise IngestError(
            f"{path} line {line}: label {label!r} is not one of {', '.join(LABELS)} (or empty)"
        )
    sex = row.get("sex", "").upper()[:1] or None
    if sex is not None and sex not in "MFO":
        raise IngestError(f"{path} line {line}: sex {row['sex']!r} is not M, F or O")
    return StudyLabel(
        label,
        sex,
        *(_number(path, line, c, row.get(c, "")) for c in ("age_years", "weight_kg", "height_cm")),
    )


def _is_finding_column(name: str) -> bool:
    """``finding_*`` columns and measurements (``*_cm``, ``*_mm``, e.g. ``mr_jet_cm``)."""
    return name.startswith("finding_") or name.endswith(("_cm", "_mm"))


def _view(path: Path, line: int, text: str) -> str | None:
    """A clips.csv view as the view classifier names it: ``A4C`` is ``a4c``; None if empty."""
    if not text:
        return None
    view = text.lower()
    if view not in VIEWS:  # any string was stored: a view the view classifier has no class for
        raise IngestError(f"{path} line {line}: view {text!r} is not one of "
                          f"{', '.join(VIEWS)} (or empty)")  # fmt: skip
    return view


def _clip_row(path: Path, line: int, row: dict[str, str]) -> ClipLabel:
    doppler_text = row.get("doppler", "").lower()
    if doppler_text and doppler_text not in _TRUE | _FALSE:
        raise IngestError(f"{path} line {line}: doppler {row['doppler']!r} is not 1/0, "
                          "true/false, yes/no or y/n (or empty)")  # fmt: skip
    doppler = None if not doppler_text else doppler_text in _TRUE
    extra = {k: v for k, v in row.items() if v and _is_finding_column(k)}
    findings = row.get("findings") or None
    if extra:
        if findings:
            extra["findings"] = findings
        findings = json.dumps(extra, sort_keys=True)
    return ClipLabel(_view(path, line, row.get("view", "")), doppler, findings)


def load_annotations(labels: Path | None, clips: Path | None) -> Annotations:
    """Read labels.csv and clips.csv (either may be None).

    Raises:
        IngestError: a file is missing, lacks its key column, has a bad value (the
            message names the file, line and column), or lists one UID twice with
            different values.
    """
    out = Annotations()
    if labels is not None:
        out.studies, out.study_rows = _keyed(labels, "study_instance_uid", _study_row)
    if clips is not None:
        out.clips, out.clip_rows = _keyed(clips, "sop_instance_uid", _clip_row)
    return out


def _keyed(path: Path, key: str, parse: Callable[[Path, int, dict[str, str]], _Row]
           ) -> tuple[dict[str, _Row], RowLines]:  # fmt: skip
    """Rows of ``path`` parsed and keyed by their ``key`` column (rows without one are not
    parsed), and the line numbers of every row by key.

    Raises:
        IngestError: two rows of one key say different things (which one is right cannot
            be told; the last one silently won before).
    """
    parsed: dict[str, _Row] = {}
    lines: dict[str, list[int]] = {}
    for line, row in _rows(path, key):
        uid = row[key]
        lines.setdefault(uid, []).append(line)
        if not uid:
            continue
        value = parse(path, line, row)
        if uid in parsed and parsed[uid] != value:
            raise IngestError(f"{path} line {line} repeats the {key} of line {lines[uid][0]} "
                              "with other values; keep one row per UID")  # fmt: skip
        parsed[uid] = value
    return parsed, RowLines(path, key, lines)


def _header_years(age: str) -> float | None:
    match = re.fullmatch(r"(\d{3})([DWMY])", age.strip().upper())
    if match is None:
        return None
    per_year = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[match.group(2)]
    return round(int(match.group(1)) / per_year, 2)


def _positive(value: Any, scale: float = 1.0) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number * scale if number > 0 else None


def study_fields(header: Dataset, given: StudyLabel | None) -> dict[str, Any]:
    """Label and demographics of a study: labels.csv first, the retained header otherwise."""
    sex = str(header.get("PatientSex", "") or "").strip().upper()[:1] or None
    from_header = {
        "label": None,
        "sex": sex if sex in ("M", "F", "O") else None,
        "age_years": _header_years(str(header.get("PatientAge", "") or "")),
        "weight_kg": _positive(header.get("PatientWeight")),
        "height_cm": _positive(header.get("PatientSize"), 100.0),
    }
    if given is None:
        return from_header
    chosen = dataclasses.asdict(given)
    return {k: chosen[k] if chosen[k] is not None else v for k, v in from_header.items()}
