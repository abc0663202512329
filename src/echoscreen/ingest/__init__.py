"""Ingest: sources of DICOM studies (folder, zip, DICOMweb, C-STORE) and the ingest pipeline.

Sources yield :class:`StudyBatch` objects through the :class:`ClipSource` seam;
the pipeline de-identifies, preprocesses, encrypts and catalogs them.
"""

from __future__ import annotations

from echoscreen.ingest.base import UNREADABLE_KEY, ClipSource, Instance, StudyBatch
from echoscreen.ingest.dicomweb import DicomWebSource
from echoscreen.ingest.files import FolderSource, ZipSource
from echoscreen.ingest.scp import StoreSCP
from echoscreen.ingest.source import open_source

__all__ = [
    "UNREADABLE_KEY",
    "ClipSource",
    "DicomWebSource",
    "FolderSource",
    "Instance",
    "StoreSCP",
    "StudyBatch",
    "ZipSource",
    "open_source",
]
