"""Demo stage 6: the screening service, used the way clinicians' software uses it.

The published package is served by the real service (uvicorn on loopback, ONNX Runtime,
micro-batching, the CPU pool); a bearer token is created for the demo; every held-out
study folder is posted to ``POST /v1/studies`` by concurrent clients and its job polled
until done. The decisions are compared with the offline screening of stage 5d (same
package, same files: they must agree). With ``--serve`` the service then keeps running
in the foreground and the URL of its web page is printed with the token.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from echoscreen.demo.config import DemoConfig
from echoscreen.service.config import ServiceConfig

#: clients posting held-out studies at once
CLIENTS = 4


def service_config(cfg: DemoConfig, package_ref: str, port: int) -> ServiceConfig:
    """The demo's service settings: its registry, a state folder under the workdir."""
    return ServiceConfig(registry=cfg.workdir / "registry", model=package_ref,
                         state_dir=cfg.workdir / "service", port=port,
                         backend="onnx").validate()  # fmt: skip


def demo_token(svc: ServiceConfig) -> str:
    """A fresh bearer token named ``demo`` (an older one of that name is revoked)."""
    from echoscreen.service.tokens import TokenStore

    svc.state_dir.mkdir(parents=True, exist_ok=True)
    tokens = TokenStore(svc.state_dir / "tokens.db")
    if any(t.name == "demo" and t.revoked is None for t in tokens.list()):
        tokens.revoke("demo")
    return tokens.create("demo")


def _post(url: str, token: str, folder: Path) -> tuple[dict[str, Any], float]:
    from echoscreen.screen import iter_study
    from echoscreen.service.client import ServiceClient

    start = time.perf_counter()
    with ServiceClient(url, token) as client:
        doc = client.wait(client.submit(list(iter_study(folder))))
    return doc, time.perf_counter() - start


def screen_through_api(cfg: DemoConfig, package_ref: str, offline: dict[str, str],
                       console: Console) -> Table:  # fmt: skip
    """Post every held-out study to the running service; table of decisions and latency.

    Args:
        offline: ``{study folder: decision}`` from stage 5d, to compare with.

    Raises:
        EchoscreenError: the service could not start, or refused a study.
    """
    from echoscreen.service.server import running

    cohort = cfg.workdir / "held-out"
    svc = service_config(cfg, package_ref, port=0)
    token = demo_token(svc)
    table = Table(title=f"Held-out studies screened through the service API ({CLIENTS} "
                        "concurrent clients)")  # fmt: skip
    for col in ("study", "decision", "p(screen+)", "clips", "same as 5d", "s"):
        table.add_column(col, justify="left" if col in ("study", "decision") else "right")
    with running(svc) as (url, _service):
        console.print(f"service at {url} (model {package_ref}, backend onnx)")
        folders = sorted(offline)
        start = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            docs = list(pool.map(lambda f: _post(url, token, cohort / f), folders))
        wall = time.perf_counter() - start
    agree = 0
    for folder, (doc, secs) in zip(folders, docs, strict=True):
        res = doc["result"] or {}
        same = res.get("decision") == offline[folder]
        agree += same
        p = res.get("p_screen")
        table.add_row(folder, str(res.get("decision", doc["status"])),
                      "-" if p is None else f"{p:.3f}", str(len(res.get("clips", []))),
                      "yes" if same else "NO", f"{secs:.1f}")  # fmt: skip
    table.caption = (f"{len(folders)} studies in {wall:.1f} s ({60 * len(folders) / wall:.0f} "
                     f"studies/min); {agree}/{len(folders)} decisions as in stage 5d")  # fmt: skip
    return table


def serve_forever(cfg: DemoConfig, package_ref: str, port: int, console: Console) -> None:
    """``echoscreen demo --serve``: run the service in the foreground until Ctrl-C."""
    from echoscreen.service.server import serve

    svc = service_config(cfg, package_ref, port)
    token = demo_token(svc)
    console.rule("screening service")

    def listening(url: str) -> None:  # the port bound: --port 0 picks one
        console.print(f"web page: {url}/  (sign in with the token below)")
        console.print(f"token: {token}")
        console.print("Ctrl-C stops it (jobs in flight are finished first).")

    serve(svc, on_listen=listening)
