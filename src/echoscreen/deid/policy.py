"""Which options of the PS3.15 Annex E profile are applied."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeidPolicy:
    """The Basic Application Level Confidentiality Profile plus the options echoscreen uses.

    All options are on by default; the Basic Profile itself is always applied.

    Attributes:
        retain_patient_characteristics: Retain Patient Characteristics Option (113108):
            Patient's Age, Sex, Size, Weight, Ethnic Group, Pregnancy and Smoking Status are
            kept; free-text characteristics (Allergies, Patient State, ...) are cleaned.
        modified_dates: Retain Longitudinal Temporal Information with Modified Dates Option
            (113107): every date is moved by one keyed shift per patient instead of being
            removed; times of day are kept.
        clean_descriptors: Clean Descriptors Option (113105): descriptions and comments are
            kept as attributes but emptied (free text may name people) and coded descriptor
            sequences are kept with the profile applied inside.
        clean_pixel_data: Clean Pixel Data Option (113101): pixels outside the Sequence of
            Ultrasound Regions are blanked by :func:`echoscreen.deid.deidentify_instance`.
    """

    retain_patient_characteristics: bool = True
    modified_dates: bool = True
    clean_descriptors: bool = True
    clean_pixel_data: bool = True
