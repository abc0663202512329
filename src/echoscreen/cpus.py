"""How many CPU cores this process may use.

``os.cpu_count()`` counts the host's cores, not the ones a container's cpuset, ``taskset``
or a batch scheduler leaves to the process: a service started with two cores on a 16-core
host would start 16 preprocessing processes. Every default that scales with cores asks
:func:`usable_cpus` instead.
"""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return max(1, os.cpu_count() or 1)
