"""The data server's HTTP API (FastAPI), behind :class:`~.guard.GuardMiddleware`.

Routes (all JSON unless said otherwise; see ``docs/datasite.md``):

``GET  /v1/session``                      who the server thinks you are, and its limits
``GET  /v1/datasets``                     the datasets granted to you, clips per split
``GET  /v1/datasets/{name}/splits``       studies and clips per split of one dataset
``GET  /v1/datasets/{name}/clips?split=`` clip ids, study ids, labels, view, Doppler, shape
``GET  /v1/clips/{id}``                   one clip tensor, ``application/x-npy``
                                          (``Content-Encoding: zstd`` if stored so and
                                          ``Accept-Encoding`` names zstd)
``POST /v1/clips:batch``                  ``{"ids": [...], "accept": ["zstd"]}`` -> many
                                          tensors (:mod:`.wire`); with ``accept``, those
                                          stored compressed are sent so

Statuses: 400 malformed id/body, 403 identity refused, 404 not found *or not
granted* (indistinguishable on purpose), 413 batch or body too large, 429 rate
limit (``Retry-After``), 409 a stored object failed its integrity check (no pixels
are sent), 503 the catalog is unreachable.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, NoReturn

from fastapi import FastAPI, HTTPException, Request, Response

from echoscreen.datasite import access
from echoscreen.datasite.attest import AttestationVerifier, CertificateOnly, PeerIdentity
from echoscreen.datasite.audit import AuditLog
from echoscreen.datasite.guard import GuardMiddleware
from echoscreen.datasite.httpd import AbortAnswer, run_blocking
from echoscreen.datasite.limits import Limits, RateLimiter
from echoscreen.datasite.schema import connect
from echoscreen.datasite.wire import (
    BATCH_TYPE,
    NPY_TYPE,
    WireError,
    npy_array,
    npy_nbytes,
    record_head,
)
from echoscreen.errors import CatalogError, IntegrityError, StoreError
from echoscreen.store import tensors
from echoscreen.store.site import Site

API_VERSION = 1


class _Server:
    """The state routes share: site, limits, rate limiter."""

    def __init__(self, site: Site, limits: Limits) -> None:
        self.site, self.limits = site, limits
        self.rate = RateLimiter(limits)

    def charge(self, request: Request, cost: int) -> None:
        wait = self.rate.take(identity(request).tenant, cost)
        if wait > 0:
            deny(request, 429, f"rate limit: {self.limits.rate:g} clips/s per tenant",
                 {"Retry-After": str(max(1, math.ceil(wait)))})  # fmt: skip

    def open_clips(self, request: Request, ids: list[str], packed: bool) -> list[Wanted]:
        """Check grants and rate for ``ids`` (all or nothing); nothing is decrypted yet.

        Args:
            packed: the client takes stored ``zstd`` tensors as they are.

        Returns:
            one :class:`Wanted` per id, in order: the sizes follow from the catalog, so
            an answer's length is known up front.
        """
        tenant = identity(request).tenant
        with connect(self.site.catalog) as conn:
            found = access.granted_objects(conn, tenant, ids)
        missing = [c for c in ids if c not in found]
        if missing:
            deny(request, 404, f"no clip {missing[0]!r} in the datasets granted to you")
        self.charge(request, len(ids))
        return [Wanted(c, found[c], packed and found[c].codec == tensors.ZSTD) for c in ids]

    def read_clip(self, request: Request, want: Wanted) -> bytes | memoryview:
        """Decrypt and authenticate one clip (GIL released): the bytes to send, its
        stored ``zstd`` frame if ``want.packed``, else its ``.npy`` (a view of the
        decrypted buffer, no copy on the way to the socket; decompressed if stored so).

        Raises:
            HTTPException: 409, the object failed its integrity check, differs from its
                catalog row, or is unavailable (the reason is in the request's audit state).
        """
        cid, st = want.cid, want.stored
        try:
            data: bytes | memoryview = self.site.objects.read(st.oid)
            stored_n = st.nbytes if st.nbytes is not None else want.npy_n
            if len(data) != stored_n or tensors.form(data) != st.codec:
                raise WireError(f"stored tensor is {len(data)} bytes of "
                                f"{tensors.form(data)}, its catalog row says {stored_n} of "
                                f"{st.codec}")  # fmt: skip
            if want.packed:
                if tensors.unpacked_size(data) != want.npy_n:
                    raise WireError("zstd frame does not hold the catalog's shape")
                return data
            data = tensors.npy_bytes(data, want.npy_n)
            npy_array(data, st.shape)
        except (IntegrityError, WireError, tensors.TensorFormatError) as exc:
            deny(request, 409, f"clip {cid}: stored object failed its integrity check "
                 f"({exc}); the site operator should run `site verify`")  # fmt: skip
        except StoreError as exc:
            deny(request, 409, f"clip {cid}: stored object unavailable ({exc})")
        return data


@dataclass(frozen=True)
class Wanted:
    """One clip of a request, and how it is sent.

    Attributes:
        cid: the clip id.
        stored: its catalog row.
        packed: sent as its stored ``zstd`` frame (else as ``.npy``).
    """

    cid: str
    stored: access.StoredTensor
    packed: bool

    @property
    def npy_n(self) -> int:
        """Size of the clip's ``.npy`` bytes."""
        return npy_nbytes(self.stored.shape)

    @property
    def send_n(self) -> int:
        """Size of the bytes sent for the clip."""
        return self.stored.nbytes if self.packed and self.stored.nbytes else self.npy_n


def identity(request: Request) -> PeerIdentity:
    """The authenticated peer the guard put into the request state."""
    ident = request.scope.get("state", {}).get("identity")
    if not isinstance(ident, PeerIdentity):  # the guard always sets it; never serve without
        raise HTTPException(403, "no authenticated identity")
    return ident


def deny(request: Request, status: int, reason: str,
         headers: dict[str, str] | None = None) -> NoReturn:  # fmt: skip
    """Refuse with ``status``; the reason goes to the client and the audit log."""
    request.scope.setdefault("state", {})["audit_detail"] = reason
    raise HTTPException(status, reason, headers=headers)


def _target(request: Request, what: str) -> None:
    request.scope.setdefault("state", {})["audit_target"] = what[:2000]


def _check_dataset(request: Request, name: str) -> None:
    _target(request, f"dataset {name[:128]}")
    if not access.valid_dataset_name(name):
        deny(request, 400, "malformed dataset name")


def create_app(site: Site, *, limits: Limits | None = None,
               verifier: AttestationVerifier | None = None,
               audit: AuditLog | None = None) -> Any:  # fmt: skip
    """The ASGI application of the data server for an open site.

    Args:
        site: the data site (its catalog, objects and keys).
        limits: batch and rate bounds (default :class:`Limits`).
        verifier: key-release decision (default :class:`CertificateOnly`).
        audit: the audit log (default: the site's).

    Returns:
        an ASGI app: the routes wrapped in :class:`GuardMiddleware`.
    """
    srv = _Server(site, limits or Limits())
    api = FastAPI(title="echoscreen data server", docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    _routes(api, srv)

    @api.exception_handler(CatalogError)
    async def _catalog_503(request: Request, exc: CatalogError) -> Response:
        return _catalog_down(request, exc)

    return GuardMiddleware(_BatchRoute(api, srv), site.catalog, verifier or CertificateOnly(),
                           audit or AuditLog(site))  # fmt: skip


def _catalog_down(request: Request, exc: CatalogError) -> Response:
    request.scope.setdefault("state", {})["audit_detail"] = f"catalog unavailable: {exc}"
    body = json.dumps({"detail": "the site catalog is unavailable; retry later"})
    return Response(body, 503, media_type="application/json")


def _routes(api: FastAPI, srv: _Server) -> None:
    cat = srv.site.catalog

    @api.get("/v1/session")
    def session(request: Request) -> dict[str, Any]:
        ident = identity(request)
        lim = srv.limits
        return {"api": API_VERSION, "tenant": ident.tenant, "serial": ident.serial,
                "limits": {"max_batch": lim.max_batch, "rate": lim.rate, "burst": lim.burst}}

    @api.get("/v1/datasets")
    def datasets(request: Request) -> dict[str, Any]:
        srv.charge(request, 1)
        with cat.session() as s:
            return {"datasets": access.visible_datasets(s, identity(request).tenant)}

    @api.get("/v1/datasets/{name}/splits")
    def splits(name: str, request: Request) -> dict[str, Any]:
        _check_dataset(request, name)
        srv.charge(request, 1)
        with cat.session() as s:
            mine = {d["name"]: d for d in access.visible_datasets(s, identity(request).tenant)}
        if name not in mine:
            deny(request, 404, f"no dataset {name!r} among those granted to you")
        return mine[name]

    @api.get("/v1/datasets/{name}/clips")
    def clips(name: str, request: Request, split: str | None = None) -> dict[str, Any]:
        _check_dataset(request, name)
        srv.charge(request, 1)
        try:
            with cat.session() as s:
                rows = access.dataset_clips(s, identity(request).tenant, name, split)
        except LookupError:
            deny(request, 404, f"no dataset {name!r} among those granted to you")
        except ValueError:
            deny(request, 400, "split must be train, val, test or unsplit")
        return {"name": name, "split": split, "clips": rows}

    @api.get("/v1/clips/{cid}")
    def clip(cid: str, request: Request) -> Response:
        _target(request, f"clip {cid[:128]}")
        if not access.valid_clip_id(cid):
            deny(request, 400, "malformed clip id")
        packed = "zstd" in request.headers.get("accept-encoding", "").lower()
        (want,) = srv.open_clips(request, [cid], packed)
        headers = {"content-encoding": "zstd"} if want.packed else None
        return Response(srv.read_clip(request, want), media_type=NPY_TYPE, headers=headers)

    @api.post("/v1/clips:batch")
    async def batch(request: Request) -> Response:  # reached only without _BatchRoute
        return await _batch(srv, request)


async def _batch(srv: _Server, request: Request) -> Response:
    """``POST /v1/clips:batch``: check everything, decrypt the first clip, then stream."""
    ids, packed = await _batch_ids(request, srv.limits)
    _target(request, f"{len(ids)} clips: " + ",".join(ids))
    if any(not access.valid_clip_id(c) for c in ids):
        deny(request, 400, "malformed clip id in ids")
    clips = await run_blocking(request.scope, srv.open_clips, request, ids, packed)
    # a first clip that fails still gets a 409, before any byte
    first = await run_blocking(request.scope, srv.read_clip, request, clips[0])
    return _ClipStream(srv, request, clips, first)


class _BatchRoute:
    """``POST /v1/clips:batch`` (the bulk of the traffic) straight to :func:`_batch`, past
    FastAPI's routing and middleware layers (about a third of the fixed CPU of a request
    here); every other request goes on to ``api``. Same statuses and bodies as there."""

    def __init__(self, api: Any, srv: _Server) -> None:
        self.api, self.srv = api, srv

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or \
                scope["path"] != "/v1/clips:batch":  # fmt: skip
            await self.api(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await _batch(self.srv, request)
        except HTTPException as exc:
            body = json.dumps({"detail": exc.detail})
            response = Response(body, exc.status_code, headers=exc.headers,
                                media_type="application/json")  # fmt: skip
        except CatalogError as exc:
            response = _catalog_down(request, exc)
        await response(scope, receive, send)


class _ClipStream(Response):
    """A batch answer sent clip by clip: decrypt clip k, send it, then clip k+1.

    The socket's buffers decouple this thread from the reader, which receives clip k
    while clip k+1 is decrypted. ``Content-Length`` comes from the catalog's shapes and
    stored sizes. A clip failing its check after the answer began aborts it
    (:class:`AbortAnswer`: the connection is closed short of ``Content-Length``, so the
    client sees a broken answer and raises); the audit record says why, with status 409.
    """

    def __init__(self, srv: _Server, request: Request, clips: list[Wanted],
                 first: bytes | memoryview) -> None:  # fmt: skip
        super().__init__(None, media_type=BATCH_TYPE)
        self.srv, self.request, self.clips, self.first = srv, request, clips, first
        self.heads = [record_head(w.cid, w.send_n) for w in clips]
        total = sum(len(h) for h in self.heads) + sum(w.send_n for w in clips)
        self.headers["content-length"] = str(total)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        last = len(self.clips) - 1
        for k, want in enumerate(self.clips):
            if k == 0:
                data, self.first = self.first, memoryview(b"")
            else:
                try:
                    data = await run_blocking(scope, self.srv.read_clip, self.request, want)
                except HTTPException as exc:
                    scope.setdefault("state", {})["audit_status"] = exc.status_code
                    raise AbortAnswer(f"{exc.detail} (after {k} clips were sent)") from exc
            await send({"type": "http.response.body", "body": self.heads[k], "more_body": True})
            await send({"type": "http.response.body", "body": data, "more_body": k < last})
            del data  # the decrypted buffer goes as soon as the socket has it


async def _batch_ids(request: Request, limits: Limits) -> tuple[list[str], bool]:
    """The ``ids`` of a batch body, bounded in bytes and count, and whether its
    ``accept`` list names ``zstd`` (stored compressed tensors sent as they are)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body:  # refused before it is sent
        deny(request, 413, f"request body over {limits.max_body} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_body:
            deny(request, 413, f"request body over {limits.max_body} bytes")
    try:
        asked = json.loads(bytes(body))
        ids, accept = asked["ids"], asked.get("accept", [])
    except (ValueError, KeyError, TypeError, AttributeError):
        deny(request, 400, 'body must be JSON {"ids": [clip id, ...], "accept": ["zstd"]}')
    if not isinstance(accept, list) or not all(isinstance(a, str) for a in accept):
        deny(request, 400, '"accept" must be a list of tensor forms, e.g. ["zstd"]')
    if not isinstance(ids, list) or not ids or not all(isinstance(c, str) for c in ids):
        deny(request, 400, '"ids" must be a non-empty list of clip ids')
    if len(ids) > limits.max_batch:
        deny(request, 413, f"batch of {len(ids)} ids is over the limit of {limits.max_batch}")
    if len(set(ids)) != len(ids):
        deny(request, 400, "duplicate clip ids in one batch")
    return list(ids), tensors.ZSTD in accept
