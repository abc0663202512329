"""``ServiceConfig``: the one settings object of a screening service process.

Built at the edge (``echoscreen serve`` parses its options into it), validated once with
:meth:`ServiceConfig.validate`, and passed down; nothing reads settings elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from echoscreen.cpus import usable_cpus
from echoscreen.errors import ConfigError, RegistryError
from echoscreen.registry.package import parse_ref
from echoscreen.screen.backends import BACKENDS


@dataclass(frozen=True)
class ServiceConfig:
    """Settings of the screening service.

    Attributes:
        registry: the model registry folder.
        model: the package to serve, ``"NAME:VERSION"``.
        state_dir: where ``tokens.db``, ``jobs.db`` and the pseudonym key live.
        host, port: where the HTTP API listens.
        dicom_port: port of the C-STORE SCP (None: no SCP); ae_title: its AE title.
        pacs: STOW-RS base URL results are sent to as SR (None: not sent).
        sr_outbox_size: most SRs kept in memory while the PACS cannot take them (the
            oldest is dropped past it); sr_retry_s: seconds between their resends.
        backend: "auto", "onnx" or "torch".
        inference_threads: ONNX Runtime intra-op threads per model session (0: one per
            core). 1 by default: the batcher already runs the two models' batches at
            once beside the preprocessing processes, so more threads per session only
            oversubscribe the cores (measured: 15-30 % more CPU per clip with 2 on 2 cores).
        cpu_workers: preprocessing processes (0: one per CPU core).
        job_threads: studies screened at once.
        max_batch: most clips in one inference batch; max_wait_ms: how long the batcher
            waits for more clips after the first one arrives (ms).
        queue_size: most jobs waiting to start; more are refused with 503.
        result_ttl_s: how long a finished job's result is kept (s).
        explain: compute saliency key frames; explain_clips: for how many evidence clips.
        max_upload_bytes: largest upload (bytes); max_files: most files in one study;
        max_queued_bytes: most bytes of studies held at once, over every accepted job not
            yet finished and every upload being read (at least ``max_upload_bytes``); an
            upload that would pass it gets 503 with Retry-After before its body is kept;
            an upload counts its body and the files parsed out of it while both are alive
            (twice ``max_upload_bytes`` takes every upload that limit allows);
        max_frames: most frames in one file; max_sync_files: most files for the
            synchronous ``POST /v1/screen``.
        upload_idle_s: longest wait for the next bytes of an upload's body (s); a client
            that stops sending mid-upload gets 408 and its connection is closed.
        head_timeout_s: longest a request's head (request line and headers) may take to
            arrive, from a new connection's start or the next request's first byte (s);
            past it: 408 and the connection is closed (:mod:`echoscreen.service.protocol`).
    """

    registry: Path
    model: str
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    dicom_port: int | None = None
    ae_title: str = "ECHOSCREEN"
    pacs: str | None = None
    sr_outbox_size: int = 100
    sr_retry_s: float = 60.0
    backend: str = "auto"
    inference_threads: int = 1
    cpu_workers: int = 0
    job_threads: int = 8
    max_batch: int = 16
    max_wait_ms: float = 10.0
    queue_size: int = 64
    result_ttl_s: float = 3600.0
    explain: bool = True
    explain_clips: int = 3
    max_upload_bytes: int = 512 << 20
    max_queued_bytes: int = 2 << 30
    max_files: int = 500
    max_frames: int = 2000
    max_sync_files: int = 40
    upload_idle_s: float = 60.0
    head_timeout_s: float = 20.0

    @property
    def workers(self) -> int:
        """Preprocessing processes actually used (``cpu_workers``, or the core count)."""
        return self.cpu_workers or usable_cpus()

    def validate(self) -> ServiceConfig:
        """Check every setting; return ``self`` or raise :class:`ConfigError` saying what to fix."""
        try:
            parse_ref(self.model)
        except RegistryError as exc:
            raise ConfigError(f"--model: {exc}") from exc
        if not Path(self.registry).is_dir():
            raise ConfigError(f"registry {self.registry} is not a folder; pass --registry DIR "
                              "holding published packages")  # fmt: skip
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend!r} is unknown; use one of "
                              f"{', '.join(BACKENDS)}")  # fmt: skip
        for name in ("port", "dicom_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(f"{_flag(name)} {port} is not a TCP port; use 1-65535 "
                                  "(--port 0: any free)")  # fmt: skip
        if not 1 <= len(self.ae_title) <= 16 or not self.ae_title.isascii():
            raise ConfigError(f"--ae-title {self.ae_title!r} must be 1-16 ASCII characters")
        if self.pacs is not None and not self.pacs.startswith(("http://", "https://")):
            raise ConfigError(f"--pacs {self.pacs!r} is not an http(s) URL; give the STOW-RS "
                              "base, e.g. http://127.0.0.1:8042/dicom-web")  # fmt: skip
        self._check_counts()
        if self.max_queued_bytes < self.max_upload_bytes:
            raise ConfigError(f"--max-queued-mb ({self.max_queued_bytes >> 20}) is less than "
                              f"--max-upload-mb ({self.max_upload_bytes >> 20}): an upload at "
                              "the limit could never be accepted; raise it")  # fmt: skip
        return self

    def _check_counts(self) -> None:
        positive = ("job_threads", "max_batch", "queue_size", "explain_clips",
                    "max_upload_bytes", "max_files", "max_frames", "max_sync_files",
                    "sr_outbox_size")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{_flag(name)} is {getattr(self, name)}; it must be at least 1")
        for name in ("cpu_workers", "inference_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} is {getattr(self, name)}; use 0 (one per core) "
                                  "or more")  # fmt: skip
        if self.max_wait_ms < 0:
            raise ConfigError(f"--max-wait-ms is {self.max_wait_ms}; it must be >= 0")
        if not self.result_ttl_s > 0:
            raise ConfigError(f"--result-ttl is {self.result_ttl_s}; it must be > 0 (seconds)")
        for name in ("upload_idle_s", "head_timeout_s", "sr_retry_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} is {getattr(self, name)}; it must be > 0 (seconds)")


#: the ``echoscreen serve`` option of each setting, for messages that say what to change
#: (``max_upload_bytes`` and ``max_queued_bytes`` are ``--max-upload-mb`` and
#: ``--max-queued-mb`` x 2**20, which the command bounds itself)
FLAGS = {"port": "--port", "dicom_port": "--dicom-port", "cpu_workers": "--workers",
         "job_threads": "--job-threads", "max_batch": "--max-batch",
         "queue_size": "--queue-size", "max_files": "--max-files",
         "max_sync_files": "--max-sync-files"}  # fmt: skip


def _flag(name: str) -> str:
    """The option that sets ``name`` (settings without one are named as fields)."""
    return FLAGS.get(name, name)
