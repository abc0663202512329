"""The screening service's HTTP API (FastAPI); see docs/service.md.

Routes (JSON unless said otherwise):

``POST /v1/studies``                          a study (form files, zip, DICOM) -> 202 job
``GET  /v1/jobs/{id}``                        the job's status and, when done, its result
``GET  /v1/jobs/{id}/explanations/{k}.png``   key frame ``k`` with its saliency overlay
``POST /v1/screen``                           a small study, screened synchronously -> 200
``POST /dicomweb/studies``                    STOW-RS -> DICOM JSON store response + job
``GET  /healthz``, ``GET /metrics``           liveness; Prometheus text (no token needed)
``GET  /``, ``GET /static/*``                 the web page (it asks for a token itself)

``/v1`` and ``/dicomweb`` need ``Authorization: Bearer es_...``. Every refusal is a
:class:`~echoscreen.errors.ServiceError`, answered with its status and ``{"error":
reason}`` (503 with ``Retry-After``); anything else is logged and answered as a 500 with
no details. Every request is logged on ``echoscreen.service.access`` with the token's
name, the route *template*, status and milliseconds: never a file name, header value or
path parameter.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from echoscreen.errors import (
    AuthError,
    BadStudyError,
    EchoscreenError,
    OverloadedError,
    ServiceError,
)
from echoscreen.service.budget import Hold
from echoscreen.service.stow import part_uids, store_response
from echoscreen.service.uploads import UploadLimits, parse_upload, read_body, too_large

if TYPE_CHECKING:
    from echoscreen.service.config import ServiceConfig
    from echoscreen.service.engine import OnDone, ScreeningEngine
    from echoscreen.service.metrics import Metrics
    from echoscreen.service.tokens import TokenStore

ACCESS_LOG = "echoscreen.service.access"
WEB_DIR = Path(__file__).parent / "web"
JOB_ID = re.compile(r"[0-9a-f]{32}")  # fullmatch: "$" would let a newline in
DICOM_JSON = "application/dicom+json"
_log = logging.getLogger("echoscreen.service")


def error_response(exc: ServiceError) -> JSONResponse:
    """``{"error": reason}`` with the error's status (and its Retry-After, auth, close headers)."""
    headers: dict[str, str] = {}
    if isinstance(exc, OverloadedError):
        headers["Retry-After"] = str(max(1, int(exc.retry_after)))
    if isinstance(exc, AuthError):
        headers["WWW-Authenticate"] = 'Bearer realm="echoscreen"'
    if exc.status == 408:  # a stalled upload: the rest of its body is not waited for
        headers["Connection"] = "close"
    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)


class AccessLog:
    """ASGI middleware: latency metrics, the access log, and a JSON 500 for real bugs."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics
        self.log = logging.getLogger(ACCESS_LOG)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope.setdefault("state", {})
        status = [500, False]  # status, response started

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[:] = [int(message["status"]), True]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:  # a bug: log it with its traceback, answer without details
            _log.exception("unhandled error on %s %s", scope["method"], _route(scope))
            if not status[1]:
                body = JSONResponse({"error": "internal error; the operator's log has the "
                                     "details"}, status_code=500)  # fmt: skip
                await body(scope, receive, send)
            status[0] = 500
        ms = (time.perf_counter() - start) * 1000
        route, code = _route(scope), str(status[0])
        self.metrics.request_latency.labels(route=route, method=scope["method"],
                                            status=code).observe(ms / 1000)  # fmt: skip
        client = scope["state"].get("client", "-")
        self.log.info("client=%s %s %s %s %.1fms", client, scope["method"], route, code, ms)


def _route(scope: Scope) -> str:
    """The matched route's template (``/v1/jobs/{job_id}``), never the concrete path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


def create_app(cfg: ServiceConfig, engine: ScreeningEngine, tokens: TokenStore,
               metrics: Metrics, scp: Any = None,
               on_done: OnDone | None = None) -> FastAPI:  # fmt: skip
    """The service's FastAPI application (not started; see :mod:`.server`).

    Args:
        cfg: the service settings (limits).
        engine: a started :class:`~.engine.ScreeningEngine`.
        tokens: the bearer tokens.
        metrics: the process's metrics (``/metrics`` renders them).
        scp: the C-STORE SCP handle when one runs (reported by ``/healthz``).
        on_done: every job's callback once its result is stored (the SR sender with
            ``--pacs``), as for the SCP's jobs.
    """
    app = FastAPI(title="echoscreen screening service", docs_url=None, redoc_url=None,
                  openapi_url="/v1/openapi.json")  # fmt: skip
    app.state.draining = False
    _handlers(app)
    app.add_middleware(AccessLog, metrics=metrics)
    api = _Api(cfg, engine, tokens, on_done)
    auth = [Depends(api.client)]
    app.add_api_route("/v1/studies", api.post_study, methods=["POST"], status_code=202,
                      dependencies=auth)  # fmt: skip
    app.add_api_route("/v1/screen", api.post_screen, methods=["POST"], dependencies=auth)
    app.add_api_route("/v1/jobs/{job_id}", api.get_job, methods=["GET"], dependencies=auth)
    app.add_api_route("/v1/jobs/{job_id}/explanations/{k}.png", api.get_explanation,
                      methods=["GET"], dependencies=auth)  # fmt: skip
    app.add_api_route("/dicomweb/studies", api.stow, methods=["POST"], dependencies=auth)
    _public_routes(app, engine, metrics, scp)
    return app


def _job_named(job_id: str) -> str:
    """How a 404 names the job asked for: by its id when it is a job id (32 hexadecimal
    digits), else without quoting it (any length, any characters)."""
    if JOB_ID.fullmatch(job_id):
        return f"job {job_id}"
    return "job by that id (it is not one: a job id is the 32 hexadecimal digits POST answered)"


def _who(request: Request) -> str:
    """The client name :meth:`_Api.client` put into the request state."""
    return str(request.state.client)


class _Api:
    """The authenticated routes (bound methods registered by :func:`create_app`)."""

    def __init__(self, cfg: ServiceConfig, engine: ScreeningEngine, tokens: TokenStore,
                 on_done: OnDone | None = None) -> None:  # fmt: skip
        self.cfg, self.engine, self.tokens, self.on_done = cfg, engine, tokens, on_done
        self.limits = UploadLimits(max_bytes=cfg.max_upload_bytes, max_files=cfg.max_files,
                                   idle_s=cfg.upload_idle_s)  # fmt: skip
        self._sync: anyio.CapacityLimiter | None = None

    def client(self, request: Request) -> str:
        """The token's name, also put into the request state (401 without a valid token)."""
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthError("no bearer token; send `Authorization: Bearer es_...` with a "
                            "token from `echoscreen tokens create NAME`")  # fmt: skip
        name = self.tokens.verify(secret.strip())
        request.state.client = name
        return name

    async def files_of(self, request: Request, hold: Hold) -> list[tuple[str, bytes]]:
        """The upload's files (streamed up to the size limit, parsed off the event loop).

        ``hold`` is grown on the engine's byte budget before the body is kept (503 past
        ``max_queued_bytes``): to the Content-Length before a byte is read, else as the
        bytes arrive; then by the copies parsing makes while the body is alive (parts,
        a zip's files), and down to the files' bytes once the body is dropped.
        """
        coding = request.headers.get("content-encoding", "").strip().lower()
        if coding not in ("", "identity"):  # else its bytes would be read as DICOM or a zip
            raise ServiceError(f"Content-Encoding {coding!r} is not accepted; send the body "
                               "uncompressed (a zip of the study is compressed)", 415)  # fmt: skip
        declared = request.headers.get("content-length")
        size = int(declared) if declared and declared.isdigit() else None
        body = await read_body(request.stream(), size, self.limits, hold)
        ctype = request.headers.get("content-type", "")
        files = await run_in_threadpool(parse_upload, body, ctype, self.limits, hold)
        del body  # the files alone are held from here on
        hold.resize(sum(len(data) for _, data in files))
        return files

    @contextlib.contextmanager
    def holding(self) -> Iterator[Hold]:
        """A hold on the engine's byte budget for one upload, given back if the request
        fails before a job owns it (a job releases its own when it ends)."""
        hold = self.engine.budget.hold()
        try:
            yield hold
        finally:
            if hold.job is None:
                hold.release()

    async def post_study(self, request: Request) -> JSONResponse:
        source = "web" if request.headers.get("x-echoscreen-source") == "web" else "api"
        who = _who(request)
        with self.holding() as hold:
            files = await self.files_of(request, hold)
            job = await run_in_threadpool(
                lambda: self.engine.submit(files, client=who, source=source, hold=hold,
                                           on_done=self.on_done))
        url = f"/v1/jobs/{job}"
        return JSONResponse({"job": job, "status_url": url}, 202, {"Location": url})

    async def post_screen(self, request: Request) -> dict[str, Any]:
        if self._sync is None:  # made on first use, inside the event loop
            self._sync = anyio.CapacityLimiter(self.cfg.queue_size + self.cfg.job_threads)
        who = _who(request)
        with self.holding() as hold:
            files = await self.files_of(request, hold)
            n, most = len(files), self.cfg.max_sync_files
            if n > most:
                what = f"{n} files are more than the {most} screened synchronously"
                raise too_large(what, "POST /v1/studies and poll the job")
            # waits on its own limiter: blocked screens never starve the shared thread
            # pool that token checks and job polls run in
            return await anyio.to_thread.run_sync(
                lambda: self.engine.screen(files, client=who, source="sync", hold=hold,
                                           on_done=self.on_done),
                limiter=self._sync,
            )

    def get_job(self, job_id: str, request: Request) -> dict[str, Any]:
        job = self.engine.job(job_id, _who(request)) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise ServiceError(f"no {_job_named(job_id)}: unknown, or its result expired", 404)
        return job

    def get_explanation(self, job_id: str, k: int, request: Request) -> Response:
        ok = JOB_ID.fullmatch(job_id)
        png = self.engine.explanation(job_id, k, _who(request)) if ok else None
        if png is None:
            raise ServiceError(f"no explanation {k} of {_job_named(job_id)}: unknown, not ready "
                               "or expired", status=404)  # fmt: skip
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def stow(self, request: Request) -> JSONResponse:
        """STOW-RS: 200 every part taken into the job, 202 some (the others in the Failed
        SOP Sequence), 409 none (PS3.18 Store Instances); see :mod:`.stow`."""
        if not request.headers.get("content-type", "").lower().startswith("multipart/related"):
            raise ServiceError('STOW-RS takes multipart/related; type="application/dicom"',
                               status=415)  # fmt: skip
        who = _who(request)
        with self.holding() as hold:
            files = await self.files_of(request, hold)
            uids = await run_in_threadpool(part_uids, files)
            if not any(uids):
                raise ServiceError("no part of the STOW-RS request is a DICOM instance; send "
                                   "DICOM Part 10 files as application/dicom parts", 409)
            try:
                job, skipped = await run_in_threadpool(
                    lambda: self.engine.admit(files, client=who, source="stow", hold=hold,
                                              on_done=self.on_done))
            except BadStudyError as exc:
                if exc.status != 422:
                    raise
                raise ServiceError(f"none of the instances can be screened: {exc}", 409) from None
        refs, failed = store_response(uids, {int(s["file_index"]): str(s["reason"])
                                             for s in skipped})  # fmt: skip
        url = f"/v1/jobs/{job}"
        doc = {"00081190": {"vr": "UR", "Value": [str(request.base_url).rstrip("/") + url]},
               "00081199": {"vr": "SQ", "Value": refs}}  # fmt: skip
        if failed:
            doc["00081198"] = {"vr": "SQ", "Value": failed}
        headers = {"Location": url, "X-Echoscreen-Job": job}
        return JSONResponse(doc, 202 if failed else 200, headers, media_type=DICOM_JSON)


def _public_routes(app: FastAPI, engine: ScreeningEngine, metrics: Metrics, scp: Any) -> None:
    """``/healthz``, ``/metrics`` and the web page: no token needed."""

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        draining = bool(app.state.draining)
        doc = {"status": "draining" if draining else "ok", "model": engine.model_ref,
               "queue_depth": engine.queue_depth(), "dicom": scp is not None}  # fmt: skip
        return JSONResponse(doc, 503 if draining else 200)

    @app.get("/metrics")
    def prometheus() -> Response:
        metrics.queue_depth.set(engine.queue_depth())
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        page = WEB_DIR / "index.html"
        if not page.is_file():
            raise ServiceError("this installation has no web page", status=404)
        return FileResponse(page)

    app.mount("/static", StaticFiles(directory=WEB_DIR, check_dir=False), name="static")


def _handlers(app: FastAPI) -> None:
    """Every refusal as ``{"error": reason}``; validation and routing errors likewise."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(EchoscreenError)
    async def echoscreen_error(request: Request, exc: EchoscreenError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                          for e in exc.errors())  # fmt: skip
        return JSONResponse({"error": f"malformed request ({where})"}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def cut_short(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # the client hung up mid-upload: its fault, answered (to no one) and logged as such
        return JSONResponse({"error": "the upload was cut short: the client disconnected "
                             "before sending the whole body; send it again"}, 400)  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)  # fmt: skip
