"""A real Orthanc PACS with its DICOMweb plugin, started on loopback for the tests.

The session fixture ``orthanc`` writes a throw-away configuration (free ports,
storage in a temp folder, remote access and authentication off), starts the
Debian ``Orthanc`` binary, waits until ``GET /system`` answers, and kills it at
the end of the session. Tests upload with :meth:`Orthanc.upload` and empty it
with :meth:`Orthanc.clear`. In CI a missing Orthanc fails the tests (``need``).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ORTHANC_BINARIES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
DICOMWEB_PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _first_existing(candidates: tuple[str, ...]) -> str | None:
    for candidate in candidates:
        if Path(candidate).exists():
            return candidate
    return None


def _dicomweb_plugin() -> str | None:
    """Path of the DICOMweb plugin, from the Debian package list when available."""
    found = _first_existing(DICOMWEB_PLUGINS)
    if found or shutil.which("dpkg") is None:
        return found
    listing = subprocess.run(
        ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False
    ).stdout
    libs = [line for line in listing.splitlines() if "libOrthancDicomWeb.so" in line]
    return libs[0] if libs else None


@dataclass
class Orthanc:
    """A running Orthanc: its REST root, DICOMweb root and DICOM port."""

    url: str
    dicomweb_url: str
    dicom_port: int
    aet: str
    log: Path

    def upload(self, path: Path | bytes) -> dict[str, str]:
        """Store one DICOM file (POST /instances); returns Orthanc's answer."""
        data = path if isinstance(path, bytes) else Path(path).read_bytes()
        resp = httpx.post(f"{self.url}/instances", content=data, timeout=60)
        resp.raise_for_status()
        answer: dict[str, str] = resp.json()
        return answer

    def clear(self) -> None:
        """Delete every patient (and so every study) Orthanc holds."""
        for patient in httpx.get(f"{self.url}/patients", timeout=30).json():
            httpx.delete(f"{self.url}/patients/{patient}", timeout=30).raise_for_status()


def _config(tmp: Path, http_port: int, dicom_port: int, plugin: str) -> Path:
    config = {
        "Name": "echoscreen-test-pacs",
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "TESTPACS",
        "StorageDirectory": str(tmp / "storage"),
        "IndexDirectory": str(tmp / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SslEnabled": False,
        "StorageCompression": False,
        "HttpCompressionEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }
    path = tmp / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"Orthanc exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/system", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"Orthanc did not answer within 60 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A real Orthanc with DICOMweb on loopback, for the whole session."""
    from tests.conftest import need

    binary = _first_existing(ORTHANC_BINARIES) or shutil.which("Orthanc")
    need(binary is not None, "Orthanc (Debian package orthanc)")
    plugin = _dicomweb_plugin()
    need(plugin is not None, "Orthanc DICOMweb plugin (Debian package orthanc-dicomweb)")
    assert binary is not None and plugin is not None
    tmp = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = free_port(), free_port()
    log = tmp / "orthanc.log"
    url = f"http://127.0.0.1:{http_port}"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [binary, str(_config(tmp, http_port, dicom_port, plugin))],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    try:
        _wait_ready(proc, url, log)
        plugins = httpx.get(f"{url}/plugins", timeout=5).json()
        assert "dicom-web" in plugins, f"DICOMweb plugin not loaded: {plugins}"
        yield Orthanc(url, f"{url}/dicom-web", dicom_port, "TESTPACS", log)
    finally:
        proc.kill()
        proc.wait(timeout=30)
