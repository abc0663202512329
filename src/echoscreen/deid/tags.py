"""The attributes that record how an instance was de-identified (PS3.3 C.7.1.1, CID 7050)."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes

from echoscreen.deid.policy import DeidPolicy
from echoscreen.deid.table import EDITION


def _codes(policy: DeidPolicy, pixels: bool) -> list[tuple[object, str]]:
    """(CID 7050 code, short text) for the profile and each option used."""
    dcm = codes.DCM
    used = [(dcm.BasicApplicationConfidentialityProfile, f"PS3.15 E Basic {EDITION}")]
    if pixels:
        used.append((dcm.CleanPixelDataOption, "Clean Pixel Data"))
    if policy.clean_descriptors:
        used.append((dcm.CleanDescriptorsOption, "Clean Descriptors"))
    if policy.modified_dates:
        used.append(
            (dcm.RetainLongitudinalTemporalInformationModifiedDatesOption, "Modified Dates")
        )
    if policy.retain_patient_characteristics:
        used.append((dcm.RetainPatientCharacteristicsOption, "Retain Patient Chars"))
    return used


def method_codes(policy: DeidPolicy, *, pixels: bool) -> Sequence:
    """De-identification Method Code Sequence items for ``policy``.

    Args:
        policy: the header options used.
        pixels: whether Clean Pixel Data was applied (113101).

    Returns:
        A sequence of items with CodeValue, CodingSchemeDesignator ``DCM`` and CodeMeaning.
    """
    items = []
    for code, _ in _codes(policy, pixels):
        item = Dataset()
        item.CodeValue = code.value  # type: ignore[attr-defined]
        item.CodingSchemeDesignator = code.scheme_designator  # type: ignore[attr-defined]
        item.CodeMeaning = code.meaning  # type: ignore[attr-defined]
        items.append(item)
    return Sequence(items)


def method_text(policy: DeidPolicy, *, pixels: bool) -> list[str]:
    """De-identification Method values (LO, one short value per profile/option)."""
    return ["echoscreen.deid"] + [text for _, text in _codes(policy, pixels)]
