"""The model's view of one instance: the one reader for every model clip.

Ingest (the stored training tensors), offline ``echoscreen screen`` and the service all
make their clips here, so what a model is trained on and what it screens come from the
same decode, the same Clean Pixel Data and the same preprocessing (no train/serve skew).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pydicom.dataset import Dataset

from echoscreen.deid.instance import clean_instance_pixels
from echoscreen.deid.policy import DeidPolicy
from echoscreen.dicom.preprocess import ClipTensor, PreprocessSpec, preprocess, read_needed

#: The version of the pixels :func:`model_clip` makes. Ingest stores it with every clip,
#: a training run records the reader of its clips and a package the reader of its
#: training clips; :class:`~echoscreen.screen.Screener` refuses a package whose reader
#: is not this one. Change it with any change to the decode, the cleaning or the
#: preprocessing that changes a clip's pixels (history: clips ingested before readers
#: were recorded have none; ``dct-scaled/1`` is libjpeg's DCT-scaled decode of
#: 2026-11-25, which differs from a full-size decode by about 1 to 2.5 grey levels).
READER = "dct-scaled/1"


def model_clip(
    ds: Dataset,
    spec: PreprocessSpec,
    policy: DeidPolicy = DeidPolicy(),
    outputs: Sequence[int] | None = None,
) -> ClipTensor:
    """Decode the frames a clip needs, clean their pixels and preprocess them.

    JPEG-baseline frames are decoded at reduced size where the imaging box allows
    (:func:`echoscreen.dicom.read_needed`, libjpeg's DCT scaling); the cleaning then
    zeroes every decoded pixel not wholly inside the ultrasound regions, so the clip holds
    nothing from outside them, as with a full-size decode.

    Args:
        ds: the original instance (not modified; its pixel data is read).
        spec: the stored-clip spec.
        policy: the site's profile options (Clean Pixel Data).
        outputs: only these frames of the clip (indices into ``range(spec.frames)``; None:
            all), each the same as in the whole clip: a screener that feeds its models
            some frames of the stored clip decodes only theirs
            (:func:`echoscreen.dicom.preprocess`).

    Returns:
        The :class:`ClipTensor`, pixels ``uint8 (3, spec.frames, spec.size, spec.size)``
        (``len(outputs)`` frames when given).

    Raises:
        NotDicomError, DicomDecodeError, PreprocessError: the file cannot be read.
        DeidError: its pixels cannot be cleaned (the caller quarantines it).
    """
    cine = read_needed(ds, spec, outputs=outputs)
    frames = clean_instance_pixels(ds, cine.frames, policy, scale=cine.scale, inplace=True)
    return preprocess(dataclasses.replace(cine, frames=frames), spec, outputs)
