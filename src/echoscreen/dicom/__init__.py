"""Reading ultrasound DICOM cine fast and faithfully, ultrasound regions, preprocessing.

``read_cine`` decodes every transfer syntax and photometric interpretation ultrasound
scanners send to (T, H, W, C) uint8; ``preprocess`` turns a cine into a model-ready
(3, T, S, S) uint8 clip; ``inspect_file`` reports on a file without raising.
"""

from echoscreen.dicom.header import frame_rate, load_dataset
from echoscreen.dicom.inspect import InspectRow, inspect_file, iter_files
from echoscreen.dicom.preprocess import (
    ClipTensor,
    PreprocessSpec,
    decode_scale,
    detect_sector,
    imaging_box,
    load_clip,
    preprocess,
    read_needed,
    sample_indices,
)
from echoscreen.dicom.read import Cine, read_cine
from echoscreen.dicom.regions import UltrasoundRegion, parse_regions

__all__ = [
    "Cine",
    "ClipTensor",
    "InspectRow",
    "PreprocessSpec",
    "UltrasoundRegion",
    "decode_scale",
    "detect_sector",
    "frame_rate",
    "imaging_box",
    "inspect_file",
    "iter_files",
    "load_clip",
    "load_dataset",
    "parse_regions",
    "preprocess",
    "read_cine",
    "read_needed",
    "sample_indices",
]
