"""Run ``echoscreen`` through its real console entry point (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m echoscreen ARGS`` with a wide terminal; capture its output."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "echoscreen", *args],
                          capture_output=True, text=True, env=full_env, timeout=120)  # fmt: skip


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    """Run and require success; returns stdout."""
    res = run(*args, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    return res.stdout


def fails(*args: str, match: str) -> str:
    """Run and require a clean failure whose output contains ``match``."""
    res = run(*args)
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stdout + res.stderr
    assert match in res.stdout + res.stderr, res.stdout + res.stderr
    return res.stdout + res.stderr
