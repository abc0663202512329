"""The one exception tree of echoscreen.

Every error a user can cause derives from :class:`EchoscreenError`. Its message
says what went wrong *and* what to try; the CLI prints it and exits non-zero,
the services turn it into a 4xx answer. Anything else escaping is a bug.
"""

from __future__ import annotations


class EchoscreenError(Exception):
    """Base class of every error echoscreen raises on bad input or set-up."""

    #: process exit status the CLI uses for this kind of error
    exit_code: int = 2


class ConfigError(EchoscreenError):
    """A setting is missing, malformed or unsafe."""


class DicomError(EchoscreenError):
    """A file is not a DICOM object echoscreen can use."""


class NotDicomError(DicomError):
    """The input is not DICOM at all (no preamble/meta, unparsable)."""


class DicomDecodeError(DicomError):
    """The DICOM object parsed, but its pixel data cannot be decoded."""


class PreprocessError(EchoscreenError):
    """A decoded clip cannot be turned into a model-ready tensor."""


class DeidError(EchoscreenError):
    """An object cannot be de-identified safely (it is quarantined, not stored)."""


class StoreError(EchoscreenError):
    """The encrypted store or its keys cannot serve a request."""


class IntegrityError(StoreError):
    """A stored object failed authentication: it was altered or corrupted."""


class CatalogError(EchoscreenError):
    """The catalog database is missing, unreachable or inconsistent."""


class IngestError(EchoscreenError):
    """A source cannot be read or ingested."""


class DatasiteError(EchoscreenError):
    """The data server, its PKI, grants or audit log, or a remote read cannot proceed."""


class EvaluateError(EchoscreenError):
    """A run's prediction files are missing or ill-formed, so it cannot be evaluated."""


class ClusterError(EchoscreenError):
    """An ipyparallel cluster cannot be started, reached, or a task on its engines failed."""


class RegistryError(EchoscreenError):
    """A model package cannot be published or loaded (exists already, incomplete, tampered)."""


class ScreenError(EchoscreenError):
    """A study cannot be screened at all (path missing, nothing to read)."""


class ServiceError(EchoscreenError):
    """The screening service refuses a request; ``status`` is the HTTP status it answers.

    Raised by the service's library code (uploads, engine, tokens) and turned into a 4xx
    or 503 answer, with the message as the reason, by the HTTP layer.
    """

    #: HTTP status the service answers with
    status: int = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadStudyError(ServiceError):
    """The upload is not a screenable study (not DICOM, wrong modality, too large, ...)."""

    status = 422


class OverloadedError(ServiceError):
    """The service's queue is full or it is shutting down; retry after ``retry_after`` s."""

    status = 503

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthError(ServiceError):
    """A request has no bearer token, or an unknown or revoked one."""

    status = 401


def cannot_listen(host: str, port: int, exc: OSError) -> ConfigError:
    """The error for a server address that cannot be bound, saying what to change.

    Args:
        host, port: the address asked for (``--host``, ``--port``).
        exc: what ``bind`` raised (a ``getaddrinfo`` errno for a host that does not resolve;
            ``socket.create_server`` keeps the errno but not the ``gaierror`` class).
    """
    import errno
    import socket

    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        why = "the port is in use (is another server running there?); stop it, or choose " \
              "another --port (0: any free one)"  # fmt: skip
    elif exc.errno == errno.EACCES:
        why = "permission denied: ports below 1024 need privileges; choose --port 1024 or above"
    elif isinstance(exc, socket.gaierror) or exc.errno in {
            errno.EADDRNOTAVAIL, socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)}:
        why = (f"{host} is not an address of this machine; use 127.0.0.1 (this machine only), "
               "0.0.0.0 (every interface) or one of its own addresses")  # fmt: skip
    else:
        why = exc.strerror or str(exc)
    return ConfigError(f"cannot listen on {where}: {why}")
