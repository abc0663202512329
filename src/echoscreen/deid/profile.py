"""Header de-identification: the PS3.15 Annex E profile applied to a pydicom Dataset.

:class:`Deidentifier` walks a copy of the dataset, every sequence item included, and gives
each element the action its Table E.1-1 row asks for under the :class:`DeidPolicy`.
Elements the table does not list get safe defaults (see :func:`_default_action`): private
elements, curve and overlay groups and tags unknown to the data dictionary are removed,
person names and free text removed, instance UIDs pseudonymised, dates shifted.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_has_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID_dictionary

from echoscreen.deid import keyed
from echoscreen.deid.policy import DeidPolicy
from echoscreen.deid.table import Rule, annex_e_table, effective_action
from echoscreen.deid.tags import method_codes, method_text
from echoscreen.errors import DeidError

_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"}
)
_BYTES_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_DUMMY = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "IS": "0",
    "DS": "0",
    "PN": "ANONYMIZED",
    "UR": "urn:none",
    "AS": "000Y",
}


@dataclass
class DeidResult:
    """What :meth:`Deidentifier.deidentify` made.

    Attributes:
        dataset: the de-identified copy (the input is left untouched).
        patient_pseudonym: keyed pseudonym of the patient, also the new Patient ID.
        study_uid: pseudonymised Study Instance UID.
        actions: counts per action taken (``removed``, ``emptied``, ``pseudonymised``,
            ``shifted``, ...); holds no attribute values.
    """

    dataset: Dataset
    patient_pseudonym: str
    study_uid: str
    actions: Counter[str] = field(default_factory=Counter)


class Deidentifier:
    """Applies the profile with keyed pseudonyms under one site secret.

    Args:
        secret: the site's pseudonymisation secret (at least 16 random bytes).
        policy: the options to apply; all on by default.

    Raises:
        ConfigError: when the secret is too short.
    """

    def __init__(self, secret: bytes, policy: DeidPolicy = DeidPolicy()) -> None:
        self._secret = keyed.check_secret(secret)
        self.policy = policy
        self.table: Mapping[int, Rule] = annex_e_table()

    def pseudonym_uid(self, uid: str) -> str:
        """``2.25.<int>`` from HMAC-SHA256(secret, uid): same in, same out; one-way."""
        return keyed.uid_pseudonym(self._secret, uid)

    def pseudonym_id(self, value: str, kind: str = "patient") -> str:
        """A short keyed identifier (17 characters) for a Patient ID or other identifier."""
        return keyed.id_pseudonym(self._secret, value, kind)

    def date_shift_days(self, patient_id: str) -> int:
        """The patient's date shift in days, in ``[-1095, -1]``, from the original Patient ID."""
        return keyed.shift_days(self._secret, patient_id)

    def deidentify(self, ds: Dataset) -> DeidResult:
        """De-identify the header of one instance (pixel data is not touched).

        Args:
            ds: the original dataset; it is not modified.

        Returns:
            The de-identified copy with its pseudonyms and action counts.

        Raises:
            DeidError: when the dataset cannot be walked (a malformed element).
        """
        patient_key = str(ds.get("PatientID", "") or "").strip()
        if not patient_key:  # no Patient ID: each study is its own patient
            patient_key = "study:" + str(ds.get("StudyInstanceUID", "") or "")
        out = copy.deepcopy(ds)
        walk = _Walk(self, self.date_shift_days(patient_key))
        try:
            walk.dataset(out)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise DeidError(
                f"cannot de-identify the header ({type(exc).__name__}); the file is malformed: "
                "repair or re-export it from the scanner"
            ) from exc
        pseudonym = self.pseudonym_id(patient_key, "patient")
        out.PatientID = pseudonym
        self._mark(out)
        _rebuild_file_meta(out, ds)
        return DeidResult(out, pseudonym, str(out.get("StudyInstanceUID", "")), walk.actions)

    def study_uid(self, ds: Dataset) -> str:
        """The Study Instance UID :meth:`deidentify` gives ``ds``, without the rest of the header.

        The same rule and action as the full walk, applied to that one element: for
        callers (the screening service) that keep nothing of a header but the study it
        belongs to. ``""`` when ``ds`` has none.
        """
        one = Dataset()
        if "StudyInstanceUID" in ds:
            one.add(copy.deepcopy(ds["StudyInstanceUID"]))
        _Walk(self, 0).dataset(one)  # UIDs are not dates: no shift is applied
        return str(one.get("StudyInstanceUID", ""))

    def _mark(self, out: Dataset) -> None:
        burned = str(out.get("BurnedInAnnotation", "")).strip().upper()
        out.PatientIdentityRemoved = "YES" if burned == "NO" else "NO"
        out.DeidentificationMethod = method_text(self.policy, pixels=False)
        out.DeidentificationMethodCodeSequence = method_codes(self.policy, pixels=False)
        out.LongitudinalTemporalInformationModified = (
            "MODIFIED" if self.policy.modified_dates else "REMOVED"
        )


def _rebuild_file_meta(out: Dataset, original: Dataset) -> None:
    """A fresh File Meta: no source AE title or other carried-over identifiers."""
    old = getattr(original, "file_meta", None)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.get("SOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = out.get("SOPInstanceUID", "")
    if old is not None and "TransferSyntaxUID" in old:
        meta.TransferSyntaxUID = old.TransferSyntaxUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    out.file_meta = meta


class _Walk:
    """One pass over a dataset tree; counts what it did."""

    def __init__(self, deid: Deidentifier, shift: int) -> None:
        self.deid = deid
        self.policy = deid.policy
        self.shift = shift
        self.actions: Counter[str] = Counter()

    def dataset(self, ds: Dataset) -> None:
        for tag in list(ds.keys()):
            rule = self.deid.table.get(int(tag))
            action = effective_action(rule, self.policy) if rule else ""
            if action == "X" or (action == "K" and _plain_vr(ds.get_item(tag))):
                self.actions["removed" if action == "X" else "kept"] += 1
                if action == "X":  # listed X or K needs no value: not decoded
                    del ds[tag]
                continue
            elem = ds[tag]
            self.apply(ds, elem, action or self._default(elem), rule)

    def _default(self, elem: DataElement) -> str:
        return _default_action(elem, self.policy)

    def apply(self, ds: Dataset, elem: DataElement, action: str, rule: Rule | None) -> None:
        vr = elem.VR
        if (vr == "UN" and action != "K") or (action == "X/Z/U*" and vr != "SQ"):
            action = "X"
        if action == "X":
            del ds[elem.tag]
            self.actions["removed"] += 1
        elif vr == "SQ":
            self._sequence(elem, action)
        elif action == "K":
            self.actions["kept"] += 1
        elif action == "U":
            elem.value = _map_values(elem.value, self.deid.pseudonym_uid)
            self.actions["pseudonymised"] += 1
        elif action == "Z":
            _empty(elem)
            self.actions["emptied"] += 1
        elif action == "D":
            _dummy(elem, self.deid)
            self.actions["dummied"] += 1
        elif action == "C":
            self._clean(ds, elem, rule)
        elif action == "S":  # shift (default for unlisted dates)
            self._shift(elem)
        else:  # pragma: no cover - the table is validated by tests
            raise DeidError(f"unknown Annex E action {action!r}; the packaged table is corrupt")

    def _sequence(self, elem: DataElement, action: str) -> None:
        if action in {"Z", "D"}:  # an empty sequence: safe and carries nothing
            elem.value = Sequence([])
            self.actions["emptied"] += 1
            return
        for item in elem.value:  # K, C, U, X/Z/U* and unlisted: the profile inside
            self.dataset(item)
        self.actions["sequences_walked"] += 1

    def _clean(self, ds: Dataset, elem: DataElement, rule: Rule | None) -> None:
        dated = self.policy.modified_dates and rule is not None and rule.mod_dates == "C"
        if dated and elem.VR in {"DA", "DT", "TM"}:
            self._shift(elem)
        elif dated and elem.VR in _STRING_VRS:  # Timezone Offset From UTC: unchanged by a shift
            self.actions["kept"] += 1
        elif dated and rule is not None:  # a timestamp that cannot be shifted: basic action
            basic = effective_action(rule, DeidPolicy(False, False, False, False))
            self.apply(ds, elem, basic, None)
        else:  # descriptors and free-text characteristics: emptied (they may name people)
            _empty(elem)
            self.actions["cleaned"] += 1

    def _shift(self, elem: DataElement) -> None:
        if elem.VR == "TM" or elem.value in (None, ""):
            self.actions["kept"] += 1
            return
        fn = keyed.shift_da if elem.VR == "DA" else keyed.shift_dt
        values = list(elem.value) if _is_multi(elem.value) else [elem.value]
        shifted = [fn(str(v), self.shift) for v in values]
        if any(s is None for s in shifted):
            _empty(elem)
            self.actions["emptied"] += 1
            return
        elem.value = shifted if len(shifted) > 1 else shifted[0]
        self.actions["shifted"] += 1


def _plain_vr(elem: Any) -> bool:
    """The element's VR is stated and is neither SQ nor UN: keeping it needs no look at its
    value. UN may hide a sequence (explicit-VR files from some peers): those are decoded
    so that their items are walked."""
    return getattr(elem, "VR", None) not in (None, "SQ", "UN")


def _default_action(elem: DataElement, policy: DeidPolicy) -> str:
    """Action for an element the table does not list.

    Removed: private elements, groups 50xx (curves) and 60xx (overlays), command group
    0000, tags unknown to the data dictionary, person names (PN) and free text (LT, ST, UT).
    UIDs that are not well-known (transfer syntaxes, SOP classes, coding schemes) are
    pseudonymised. Dates are shifted under Modified Dates, removed otherwise. Everything
    else (image pixel, ultrasound, equipment model attributes) is kept; sequences are
    walked.
    """
    tag = elem.tag
    group = tag.group
    if tag.is_private or 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF or group == 0:
        return "X"
    if not dictionary_has_tag(tag) or elem.VR in {"PN"} | _FREE_TEXT_VRS:
        return "X"
    if elem.VR == "UI":
        values = list(elem.value) if _is_multi(elem.value) else [elem.value]
        return "K" if all(str(v) in UID_dictionary for v in values if v) else "U"
    if elem.VR in {"DA", "DT"}:
        return "S" if policy.modified_dates else "X"
    return "K"


def _is_multi(value: Any) -> bool:
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"


def _map_values(value: Any, fn: Any) -> Any:
    if value in (None, ""):
        return value
    if _is_multi(value):
        return [fn(str(v)) for v in value]
    return fn(str(value))


def _empty(elem: DataElement) -> None:
    if elem.VR in _STRING_VRS or elem.VR == "UI":
        elem.value = ""
    elif elem.VR in _BYTES_VRS:
        elem.value = b""
    else:
        elem.value = None


def _dummy(elem: DataElement, deid: Deidentifier) -> None:
    vr = elem.VR
    if vr == "UI":
        elem.value = _map_values(elem.value, deid.pseudonym_uid) or deid.pseudonym_uid("")
    elif vr in _STRING_VRS:
        elem.value = _DUMMY.get(vr, "ANONYMIZED")
    elif vr in _BYTES_VRS:
        elem.value = b"\x00\x00"
    elif vr == "AT":
        _empty(elem)
    else:
        elem.value = 0
