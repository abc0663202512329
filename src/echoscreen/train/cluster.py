"""Training on an ipyparallel cluster: start/stop one, and run ``fit`` as DDP ranks on its engines.

A *profile* names where the cluster's connection files live: a plain name
(``default``, ``rhd``) is the IPython profile folder ``$IPYTHONDIR/profile_NAME``
(``~/.ipython/profile_NAME``); anything with a path separator is a folder of its own.
:func:`start_cluster` leaves the controller and engines running (they outlive the
command); :func:`connect` reaches them from any process on the host, a notebook included.

:func:`run_on_cluster` gives every engine the environment ``torchrun`` would
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and calls
:func:`echoscreen.train.fit` on all of them at once; ``fit`` then joins the process
group exactly as under ``torchrun``. See docs/cluster.md.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from echoscreen import errors
from echoscreen.cpus import usable_cpus
from echoscreen.errors import ClusterError
from echoscreen.train.config import TrainConfig

#: the environment a DDP rank reads (see echoscreen.train.dist.read_env)
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: seconds the other ranks get to finish after one rank failed, before the engines restart
FAIL_GRACE_S = 10.0


def profile_dir(profile: str) -> Path:
    """The profile folder of ``profile`` (a name under ``$IPYTHONDIR``, or a folder path)."""
    if not profile:
        raise ClusterError("give a cluster profile (a name like `default`, or a folder)")
    if os.sep in profile or profile.startswith("."):
        return Path(profile).expanduser().resolve()
    from IPython.paths import get_ipython_dir

    return Path(get_ipython_dir()) / f"profile_{profile}"


def _cluster(profile: str, **kwargs: Any) -> Any:
    """An ``ipyparallel.Cluster`` object for ``profile`` (cluster id ``""``, loopback)."""
    import ipyparallel as ipp  # type: ignore[import-untyped]

    return ipp.Cluster(profile_dir=str(profile_dir(profile)), cluster_id="",
                       controller_ip="127.0.0.1", shutdown_atexit=False, log_level=40,
                       **kwargs)  # fmt: skip


def _load(profile: str) -> Any:
    """The running cluster of ``profile`` from its cluster file."""
    import ipyparallel as ipp

    try:
        return ipp.Cluster.from_file(profile_dir=str(profile_dir(profile)), cluster_id="",
                                     log_level=40)  # fmt: skip
    except FileNotFoundError as exc:
        raise ClusterError(
            f"no cluster is running in profile {profile!r}; start one with "
            f"`echoscreen cluster start --engines N --profile {profile}`"
        ) from exc


def start_cluster(engines: int, profile: str = "default", *, timeout: float = 120.0) -> int:
    """Start a controller and ``engines`` engines on loopback, left running in the background.

    Args:
        engines: number of engines (one process each).
        profile: profile name or folder (see :func:`profile_dir`).
        timeout: seconds to wait for every engine to register.

    Returns:
        The number of engines registered.

    Raises:
        ClusterError: bad count, a cluster already running in the profile, or engines
            that did not come up in time.
    """
    if engines < 1:
        raise ClusterError(f"--engines must be >= 1, got {engines}")
    if (profile_dir(profile) / "security" / "cluster-.json").exists():
        raise ClusterError(
            f"a cluster already runs in profile {profile!r}; "
            f"stop it first (`echoscreen cluster stop --profile {profile}`)"
        )
    profile_dir(profile).mkdir(parents=True, exist_ok=True)
    cluster = _cluster(profile, n=engines, engine_timeout=int(timeout))
    try:
        cluster.start_cluster_sync()
        rc = cluster.connect_client_sync()
        try:
            rc.wait_for_engines(engines, timeout=timeout)
            return len(rc.ids)
        finally:
            rc.close()
    except Exception as exc:
        cluster.stop_cluster_sync()
        raise ClusterError(f"the cluster in profile {profile!r} did not start: {exc}") from exc


def stop_cluster(profile: str = "default") -> None:
    """Stop the controller and engines of ``profile`` and remove its cluster file.

    Raises:
        ClusterError: no cluster runs in the profile.
    """
    cluster = _load(profile)
    cluster.stop_cluster_sync()
    Path(cluster.cluster_file).unlink(missing_ok=True)


@contextmanager
def connect(profile: str, *, timeout: float = 10.0) -> Iterator[tuple[Any, Any]]:
    """``(cluster, client)`` for the running cluster of ``profile``; the client closes after.

    Raises:
        ClusterError: no cluster, or its controller does not answer.
    """
    cluster = _load(profile)
    try:
        rc = cluster.connect_client_sync(timeout=timeout)
    except Exception as exc:
        raise ClusterError(f"the cluster in profile {profile!r} does not answer ({exc}); "
                           f"restart it: `echoscreen cluster stop --profile {profile}` "
                           "then `cluster start`") from exc  # fmt: skip
    try:
        if not rc.ids:
            rc.wait_for_engines(1, timeout=timeout)
        yield cluster, rc
    finally:
        rc.close()


def absolute(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its run (and local data, identity) as absolute paths, for other processes."""
    data = cfg.data if cfg.remote else str(Path(cfg.data).resolve())
    ident = None if cfg.identity is None else cfg.identity.resolve()
    return replace(cfg, run=cfg.run.resolve(), data=data, identity=ident)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for the rendezvous of rank 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_rank(cfg: dict[str, Any], env: dict[str, str], threads: int) -> dict[str, Any]:
    """Engine side: one rank (or one single-process run when ``env`` is empty) of ``fit``.

    Args:
        cfg: ``TrainConfig.to_json()`` of the run.
        env: the DDP variables of this rank (:data:`DIST_VARS`), or ``{}``.
        threads: torch intra-op threads for this process.

    Returns:
        ``{"result": fit's return, "pid", "host", "env"}``.
    """
    import torch

    from echoscreen.train import fit

    saved = {k: os.environ.pop(k) for k in DIST_VARS if k in os.environ}
    os.environ.update(env)
    torch.set_num_threads(max(1, threads))
    try:
        result = fit(TrainConfig.from_json(cfg), progress=False)
    finally:
        for k in DIST_VARS:
            os.environ.pop(k, None)
        os.environ.update(saved)
    return {"result": result, "pid": os.getpid(), "host": socket.gethostname(), "env": env}


def remote_error(exc: BaseException, where: str) -> errors.EchoscreenError:
    """An echoscreen error for an engine's exception (its own class if it was one of ours)."""
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    inner = getattr(exc, "elist", None)  # CompositeError: the first engine's error
    if inner:
        ename, evalue = inner[0][0], inner[0][1]
    cls = getattr(errors, str(ename), None)
    if isinstance(cls, type) and issubclass(cls, errors.EchoscreenError):
        return cls(f"{where}: {evalue}")
    return ClusterError(f"{where} failed with {ename}: {evalue}")


def _gather(cluster: Any, ars: list[Any], grace: float) -> list[dict[str, Any]]:
    """Every rank's return value; on a failure restart engines left blocked and raise."""
    failed_at: float | None = None
    while True:
        bad = [(r, ar) for r, ar in enumerate(ars) if ar.ready() and not ar.successful()]
        if bad and failed_at is None:
            failed_at = time.monotonic()
        waiting = [ar for ar in ars if not ar.ready()]
        if not waiting or (failed_at is not None and time.monotonic() - failed_at > grace):
            break
        waiting[0].wait(0.5)
    if not bad:
        return [ar.get() for ar in ars]
    rank, ar = bad[0]
    try:
        ar.get()
        raise AssertionError("unreachable")  # pragma: no cover
    except Exception as exc:
        err = remote_error(exc, f"rank {rank} of {len(ars)}")
    if waiting:  # the other ranks wait in a collective for the dead one: restart them
        cluster.restart_engines_sync()
        err.args = (f"{err.args[0]} (the engines of the other ranks were restarted)",)
    raise err


def run_on_cluster(cfg: TrainConfig, profile: str, engines: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` as DDP ranks, one per engine of the cluster in ``profile``.

    Rank 0 writes the run folder as under ``torchrun``, plus ``cluster.json`` (world
    size, engines, rendezvous, each rank's pid and epochs).

    Args:
        cfg: the run (paths are made absolute; ``batch_size`` is per rank).
        profile: profile name or folder of a running cluster.
        engines: ranks to use (default: every engine).

    Returns:
        Rank 0's metrics from :func:`echoscreen.train.fit`, plus ``"world"``.

    Raises:
        ClusterError: no cluster, too few engines, or an engine failed (an echoscreen
            error raised on an engine keeps its class, e.g. ``ConfigError``).
    """
    cfg = absolute(cfg)
    with connect(profile) as (cluster, rc):
        ids = sorted(rc.ids)
        n = len(ids) if engines is None else engines
        if not 1 <= n <= len(ids):
            raise ClusterError(f"asked for {n} ranks but profile {profile!r} has {len(ids)} "
                               "engines; start more (`cluster start --engines N`)")  # fmt: skip
        ids = ids[:n]
        port = rc[ids[0]].apply_sync(free_port)
        threads = max(1, usable_cpus() // n)
        envs = [{"RANK": str(r), "WORLD_SIZE": str(n), "LOCAL_RANK": str(r),
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
                for r in range(n)]  # fmt: skip
        ars = [rc[e].apply_async(run_rank, cfg.to_json(), env, threads)
               for e, env in zip(ids, envs, strict=True)]  # fmt: skip
        ranks = _gather(cluster, ars, FAIL_GRACE_S)
    info = {"world": n, "engines": ids, "master": f"127.0.0.1:{port}", "threads": threads,
            "ranks": [{"rank": r, "pid": x["pid"], "host": x["host"],
                       "epochs": x["result"]["epochs"]} for r, x in enumerate(ranks)]}  # fmt: skip
    (cfg.run / "cluster.json").write_text(json.dumps(info, indent=2) + "\n")
    return {**ranks[0]["result"], "world": n}
