"""De-identification: DICOM PS3.15 Annex E profile, Clean Pixel Data, keyed pseudonyms.

The Basic Application Level Confidentiality Profile with the options Retain Longitudinal
Temporal Information with Modified Dates, Retain Patient Characteristics, Clean Pixel Data
and Clean Descriptors. See docs/deid.md.

Typical use (the ingest pipeline)::

    deid = Deidentifier(site_secret)
    clean_ds, clean_frames = deidentify_instance(ds, frames, deid)   # DeidError -> quarantine
"""

from echoscreen.deid.clip import READER, model_clip
from echoscreen.deid.instance import burned_in_flag, clean_instance_pixels, deidentify_instance
from echoscreen.deid.pixels import clean_pixels, clean_scaled, region_mask, regions_of
from echoscreen.deid.policy import DeidPolicy
from echoscreen.deid.profile import Deidentifier, DeidResult
from echoscreen.deid.table import EDITION, Rule, effective_action, load_table
from echoscreen.errors import DeidError

__all__ = [
    "EDITION",
    "READER",
    "DeidError",
    "DeidPolicy",
    "DeidResult",
    "Deidentifier",
    "Rule",
    "burned_in_flag",
    "clean_instance_pixels",
    "clean_pixels",
    "clean_scaled",
    "deidentify_instance",
    "effective_action",
    "load_table",
    "model_clip",
    "region_mask",
    "regions_of",
]
