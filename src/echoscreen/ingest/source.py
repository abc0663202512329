"""Turn what the user typed (a folder, a zip, a URL) into a :class:`ClipSource`."""

from __future__ import annotations

import zipfile
from pathlib import Path

from echoscreen.errors import IngestError
from echoscreen.ingest.base import ClipSource


def open_source(spec: str) -> ClipSource:
    """Open an ingest source from its command-line spelling.

    Args:
        spec: a folder path, a ``.zip`` path, or an ``http(s)://`` DICOMweb base URL
            (e.g. ``http://pacs:8042/dicom-web``).

    Returns:
        The matching :class:`FolderSource`, :class:`ZipSource` or :class:`DicomWebSource`.

    Raises:
        IngestError: the path does not exist, is a file that is not a zip, or the
            URL scheme is not http/https.
    """
    from echoscreen.ingest.dicomweb import DicomWebSource
    from echoscreen.ingest.files import FolderSource, ZipSource

    lowered = spec.strip().lower()
    if lowered.startswith(("http://", "https://")):
        return DicomWebSource(spec.strip())
    if "://" in lowered:
        raise IngestError(
            f"unsupported source URL scheme in {spec!r}; give a folder, a .zip file, or an "
            "http(s):// DICOMweb base URL (for DIMSE pushes use `echoscreen listen`)"
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        if zipfile.is_zipfile(path):
            return ZipSource(path)
        raise IngestError(
            f"{path} is a file but not a zip archive; give the folder that holds the DICOM "
            "files, a .zip of them, or a DICOMweb URL"
        )
    what = "is not a folder or a regular file" if path.exists() else "does not exist"
    raise IngestError(
        f"source {spec!r} {what}; give a folder, a .zip file, or an http(s):// "
        "DICOMweb base URL"
    )
