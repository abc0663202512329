"""One code path for 1 and N processes: the distributed context of a run.

Under ``torchrun`` the environment carries ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`distributed` then joins the process group (gloo on CPU,
NCCL on CUDA). Without them it is a no-op and the run is rank 0 of 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from echoscreen.errors import ConfigError, EchoscreenError


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands.

    Attributes:
        rank: global rank. world: number of processes. local_rank: rank on this host.
        device: the torch device this rank computes on.
        restarts: torchrun's restart count of this worker group (0 on the first start).
    """

    rank: int
    world: int
    local_rank: int
    device: torch.device
    restarts: int

    @property
    def main(self) -> bool:
        """Whether this process writes files and shows progress (rank 0)."""
        return self.rank == 0

    @property
    def launched(self) -> bool:
        """Whether the process was started by torchrun (or another launcher setting RANK)."""
        return self.world > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def read_env() -> DistEnv:
    """The distributed context from the environment (single process if unset).

    Raises:
        ConfigError: more processes on this host than GPUs (NCCL cannot share a GPU
            between ranks).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        # LOCAL_WORLD_SIZE is torchrun's; ipyparallel engines set only LOCAL_RANK
        gpus = torch.cuda.device_count()
        per_host = int(os.environ.get("LOCAL_WORLD_SIZE", str(local + 1)))
        if local >= gpus or per_host > gpus:
            raise ConfigError(
                f"{max(per_host, local + 1)} processes on this host but {gpus} GPU(s): NCCL "
                f"cannot share a GPU between ranks; use --nproc-per-node {gpus} (or a cluster "
                f"of {gpus} engines), or hide the GPUs "
                "(CUDA_VISIBLE_DEVICES=) to train on the CPU with gloo")
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    return DistEnv(rank, world, local, device, restarts)


@contextmanager
def distributed(env: DistEnv) -> Iterator[DistEnv]:
    """Join (and finally leave) the process group when ``env.world > 1``."""
    if env.world == 1 or tdist.is_initialized():
        yield env
        return
    if env.device.type == "cuda":
        torch.cuda.set_device(env.device)
    tdist.init_process_group("nccl" if env.device.type == "cuda" else "gloo")
    try:
        yield env
    except RuntimeError as exc:
        if not _peer_lost(exc):
            raise
        raise EchoscreenError(
            f"rank {env.rank} of {env.world} stopped because another rank of this run "
            "stopped: that rank's own error, printed above, says why"
        ) from exc
    finally:
        tdist.destroy_process_group()


def _peer_lost(exc: RuntimeError) -> bool:
    """Whether a collective failed because another rank went away (it exited on an
    error of its own, which it reports itself), not because of this rank: the network
    and store errors of torch.distributed, or gloo's closed or reset connection. Other
    backend errors (e.g. NCCL's on this rank's GPU) are this rank's own and pass."""
    text = str(exc)
    return isinstance(exc, (tdist.DistNetworkError, tdist.DistStoreError)) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer",
                            "remote worker"))  # fmt: skip


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op for one process)."""
    if env.world > 1 and tdist.is_initialized():
        tdist.barrier()


def broadcast_flag(env: DistEnv, value: bool) -> bool:
    """Rank 0's ``value`` on every rank."""
    if env.world == 1:
        return value
    t = torch.tensor([int(value)], device=env.device)
    tdist.broadcast(t, 0)
    return bool(t.item())
