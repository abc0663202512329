"""Clips from a remote data server over mutual TLS (the compute-site side of the API).

:class:`RemoteSite` keeps one ``httpx.Client`` with a connection pool (keep-alive,
TLS 1.3, the identity bundle's certificate, only the bundle's CA trusted). It is
safe to call from several threads at once; :class:`~echoscreen.data.ClipDataset`
does so to prefetch. Responses are parsed in memory: nothing is written to disk.

Clip batches (the bulk of the bytes) bypass httpx, which capped a client core at about
100 MB/s: :class:`~echoscreen.data.blocks.BlockConnections` keeps its own pool of TLS
sockets from the same client context and reads each clip with ``recv_into`` straight into
the array handed over.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import numpy as np

from echoscreen.data.blocks import BlockConnections, Truncated
from echoscreen.data.failures import cannot_talk
from echoscreen.data.sources import ClipInfo
from echoscreen.datasite.wire import (
    BATCH_TYPE,
    WireError,
    npy_array,
)
from echoscreen.errors import DatasiteError
from echoscreen.store import tensors

IDENTITY_FILES = ("client.crt", "client.key", "ca.crt")
T = TypeVar("T")


def _wait(headers: Any) -> float:
    """Sleep the ``Retry-After`` of a 429 answer (1 s without one, at most 30 s)."""
    try:
        wait = min(30.0, max(0.0, float(headers.get("retry-after", "1"))))
    except ValueError:
        wait = 1.0
    time.sleep(wait)
    return wait


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))[:300]
    except (ValueError, AttributeError):
        return resp.text[:300]


class RemoteSite:
    """A data server reached at ``url`` with the identity bundle in ``identity``.

    Args:
        url: ``https://host:port`` of ``echoscreen datasite serve``.
        identity: folder from ``echoscreen pki issue`` (``client.crt``, ``client.key``,
            ``ca.crt``).
        connections: size of the connection pool.
        timeout_s: per-request timeout.
        retries: how often a 429 (rate limit) is retried, waiting ``Retry-After``.

    Raises:
        DatasiteError: the identity folder is incomplete.
    """

    def __init__(self, url: str, identity: Path, *, connections: int = 8,
                 timeout_s: float = 60.0, retries: int = 5) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        if not self.url.startswith("https://"):
            raise DatasiteError(f"{url!r}: the data server is reached over https:// only")
        self.identity = Path(identity)
        missing = [f for f in IDENTITY_FILES if not (self.identity / f).is_file()]
        if missing:
            raise DatasiteError(
                f"{self.identity} lacks {', '.join(missing)}: pass the folder that "
                "`echoscreen pki issue TENANT --out DIR` wrote"
            )
        self.connections, self.timeout_s, self.retries = connections, timeout_s, retries
        self._client: httpx.Client | None = None
        self._blocks: BlockConnections | None = None
        self._blocks_lock = threading.Lock()
        self._session: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_client=None, _blocks=None, _blocks_lock=None)  # each process: own pools
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._blocks_lock = threading.Lock()

    def _context(self) -> ssl.SSLContext:
        """The mTLS client context of the identity bundle.

        Raises:
            DatasiteError: a file of the bundle cannot be read or is not PEM, or the key
                is another's.
        """
        from echoscreen.datasite.tls import client_context

        i = self.identity
        try:
            return client_context(str(i / "ca.crt"), str(i / "client.crt"), str(i / "client.key"))
        except ssl.SSLError as exc:  # before OSError, which it is
            why = f"a file in it is not a PEM certificate or key ({exc.reason or exc})"
            if "KEY_VALUES_MISMATCH" in str(exc):
                why = "its client.key is not the key of its client.crt"
            raise DatasiteError(
                f"cannot use the identity in {i}: {why}; pass the folder that "
                "`echoscreen pki issue TENANT --out DIR` wrote, unchanged"
            ) from exc
        except OSError as exc:  # ssl names no file: find the one that cannot be read
            for name in IDENTITY_FILES:
                try:
                    (i / name).open("rb").close()
                except OSError as err:
                    raise DatasiteError(
                        f"cannot read {i / name} of the identity in {i} ({err.strerror}): "
                        "make the bundle's files readable by the user this runs as (they "
                        "are 0600: the owner's alone)"
                    ) from exc
            raise DatasiteError(f"cannot read the identity in {i} ({exc})") from exc

    @property
    def client(self) -> httpx.Client:
        """The pooled HTTPS client for JSON requests (created on first use)."""
        if self._client is None:
            limits = httpx.Limits(max_connections=self.connections,
                                  max_keepalive_connections=self.connections)  # fmt: skip
            self._client = httpx.Client(base_url=self.url, verify=self._context(), limits=limits,
                                        timeout=self.timeout_s)  # fmt: skip
        return self._client

    @property
    def blocks(self) -> BlockConnections:
        """The pooled TLS sockets clip batches are read through (created on first use)."""
        with self._blocks_lock:
            if self._blocks is None:
                self._blocks = BlockConnections(self.url, self._context(), self.connections,
                                                self.timeout_s)  # fmt: skip
            return self._blocks

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Send a request; retry 429s; turn failures into :class:`DatasiteError`.

        Raises:
            DatasiteError: TLS or connection failure, or a 4xx/5xx answer (with its reason).
        """
        def send() -> tuple[int, Any, Callable[[], str], httpx.Response]:
            try:
                resp = self.client.request(method, path, **kw)
            except httpx.TransportError as exc:
                raise cannot_talk(self.url, self.identity, self.timeout_s, exc) from exc
            return resp.status_code, resp.headers, lambda: _detail(resp), resp

        return self._retrying(f"{method} {path}", send)

    def _retrying(self, what: str, send: Callable[[], tuple[int, Any, Callable[[], str], T]]) -> T:
        """``send()`` until it is not a 429 or :attr:`retries` are spent (waiting each
        ``Retry-After``); its value, or the refusal as :class:`DatasiteError`.

        Args:
            what: ``METHOD PATH`` for messages.
            send: one try: ``(status, headers, the refusal's detail, value)``.
        """
        waited = 0.0
        for attempt in range(self.retries + 1):
            status, headers, detail, value = send()
            if status == 429 and attempt < self.retries:
                waited += _wait(headers)
                continue
            if status == 429:
                raise self._over_rate(what, detail(), waited)
            if status >= 400:
                raise self._refused(what, status, detail())
            return value
        raise AssertionError("unreachable")

    def _refused(self, what: str, status: int, detail: str) -> DatasiteError:
        """The error of a refusal, with what to do where the reason alone does not say:
        an identity no longer accepted (403), clips no longer granted mid-run (404), a
        catalog the site cannot reach (503)."""
        advice = ""
        if status == 403 and any(w in detail for w in ("revoked", "expired", "not among")):
            advice = ("; this identity is no longer accepted: ask the data site for a new "
                      "one (`echoscreen pki issue TENANT --out DIR`)")
        elif status == 404 and what.endswith("/v1/clips:batch"):
            advice = ("; clips listed when this run started are no longer granted (the "
                      "data site revoked the dataset's grant, or removed the clips): ask it "
                      "to grant the dataset again (`echoscreen site grant TENANT DATASET`)")
        elif status == 503:
            advice = "; the site's catalog is unreachable: retry once the data site has it back"
        return DatasiteError(
            f"the data server at {self.url} refused {what} ({status}): {detail}{advice}"
        )

    def _over_rate(self, what: str, detail: str, waited: float) -> DatasiteError:
        """The error of a request still over the tenant's rate after every retry."""
        return DatasiteError(
            f"the data server at {self.url} still refused {what} over the tenant's rate "
            f"limit ({detail}) after {self.retries} retries over {waited:.0f} s: this run "
            "reads faster than the site allows (all its ranks and workers share one "
            "rate); use fewer ranks or a smaller --batch-size, or ask the data site to "
            "raise `datasite serve --rate`"
        )

    def session(self) -> dict[str, Any]:
        """``GET /v1/session``: tenant, certificate serial and the server's limits."""
        if self._session is None:
            self._session = dict(self.request("GET", "/v1/session").json())
        return self._session

    @property
    def max_batch(self) -> int:
        """Most ids the server accepts in one batch."""
        return int(self.session()["limits"]["max_batch"])

    def datasets(self) -> list[dict[str, Any]]:
        """The datasets granted to this identity, with studies and clips per split."""
        return list(self.request("GET", "/v1/datasets").json()["datasets"])

    def clips(self, dataset: str, split: str | None) -> list[ClipInfo]:
        """The clips of ``dataset`` (one split, or all with ``None``)."""
        params = {"split": split} if split is not None else {}
        path = f"/v1/datasets/{quote(dataset, safe='')}/clips"
        body = self.request("GET", path, params=params).json()
        return [ClipInfo.from_json(c) for c in body["clips"]]

    def fetch(self, ids: Sequence[str]) -> list[np.ndarray]:
        """Fetch the tensors of ``ids`` in batches of at most :attr:`max_batch`.

        Returns:
            read-only ``uint8`` arrays ``(3, T, S, S)`` in the order of ``ids``.

        Raises:
            DatasiteError: refused, or the answer is malformed or incomplete.
        """
        got: dict[str, np.ndarray] = {}
        self.fetch_each(ids, got.__setitem__)
        return [got[c] for c in ids]

    def fetch_each(self, ids: Sequence[str], on_clip: Callable[[str, np.ndarray], None]) -> None:
        """Fetch ``ids`` (batches of at most :attr:`max_batch`), handing each clip over
        as soon as its bytes are in: ``on_clip(id, read-only uint8 (3, T, S, S) array)``,
        in the order of ``ids``.

        Each clip handed over is complete and authentic (the server authenticated it
        before sending it; TLS protects the way). If the answer breaks later (e.g. a
        later clip failed its integrity check at the site), the clips not yet handed
        over are not, and this raises.

        Raises:
            DatasiteError: refused, or the answer is malformed or incomplete.
        """
        step = self.max_batch
        for i in range(0, len(ids), step):
            chunk = list(ids[i : i + step])
            done = [0]

            def record(cid: str, buf: memoryview, chunk: list[str] = chunk,
                       done: list[int] = done) -> None:  # fmt: skip
                if done[0] >= len(chunk) or cid != chunk[done[0]]:
                    raise WireError("the answer's clip ids differ from those asked for")
                arr = npy_array(tensors.npy_bytes(buf))  # as stored: maybe zstd
                arr.flags.writeable = False
                done[0] += 1
                on_clip(cid, arr)

            self._post_batch(chunk, record)
            if done[0] != len(chunk):
                raise DatasiteError(f"the data server answered {done[0]} of {len(chunk)} clips")

    def _post_batch(self, ids: list[str], on_record: Callable[[str, memoryview], None],
                    ) -> None:  # fmt: skip
        """``POST /v1/clips:batch`` through :attr:`blocks`, streaming records to
        ``on_record``; retry 429s; map failures."""
        path = "/v1/clips:batch"
        body = json.dumps({"ids": ids, "accept": [tensors.ZSTD]}).encode()

        def send() -> tuple[int, Any, Callable[[], str], None]:
            try:
                status, headers, data = self.blocks.post(path, body, "application/json",
                                                         on_record)  # fmt: skip
            except Truncated as exc:
                raise DatasiteError(
                    f"the data server at {self.url} cut its answer short ({exc}); clips that "
                    "arrived whole were kept: retry, and check that the server is running"
                ) from exc
            except (WireError, tensors.TensorFormatError) as exc:
                raise DatasiteError(f"malformed answer from the data server: {exc}") from exc
            except (OSError, ValueError, IndexError) as exc:
                raise cannot_talk(self.url, self.identity, self.timeout_s, exc) from exc

            def detail() -> str:
                try:
                    return str(json.loads(bytes(data)).get("detail", ""))[:300]
                except (ValueError, AttributeError):
                    return bytes(data[:300]).decode("utf-8", "replace")

            if status < 400 and not headers.get("content-type", "").startswith(BATCH_TYPE):
                raise DatasiteError(f"unexpected answer type {headers.get('content-type')!r}")
            return status, headers, detail, None

        self._retrying(f"POST {path}", send)

    def close(self) -> None:
        """Close the connection pools."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._blocks is not None:
            self._blocks.close()
            self._blocks = None
