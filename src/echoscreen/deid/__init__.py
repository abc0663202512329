"""De-identification: DICOM PS3.15 Annex E profile, Clean Pixel Data, keyed pseudonyms.

The Basic Application Level Confidentiality Profile with the options Retain Longitudinal
Temporal Information with Modified Dates, Retain Patient Characteristics, Clean Pixel Data
and Clean Descriptors. See docs/deid.md.

Typical use (the ingest pipeline)::

    deid = Deidentifier(site_secret)
    clean_ds, clean_frames = deidentify_instance(ds, frames, deid)   # DeidError -> quarantine
"""

from echoscreen.deid.instance import burned_in_flag, deidentify_instance
from echoscreen.deid.pixels import clean_pixels, region_mask, regions_of
from echoscreen.deid.policy import DeidPolicy
from echoscreen.deid.profile import Deidentifier, DeidResult
from echoscreen.deid.table import EDITION, Rule, effective_action, load_table
from echoscreen.errors import DeidError

__all__ = [
    "EDITION",
    "DeidError",
    "DeidPolicy",
    "DeidResult",
    "Deidentifier",
    "Rule",
    "burned_in_flag",
    "clean_pixels",
    "deidentify_instance",
    "effective_action",
    "load_table",
    "region_mask",
    "regions_of",
]
