"""Run ``echoscreen`` through its real console entry point (a subprocess)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

#: capabilities that let root read any file: dropped for runs that must meet permissions
_DAC = "-dac_override,-dac_read_search"


def _unprivileged() -> list[str]:
    """Command prefix under which file permissions apply (they do not to root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")  # util-linux, on every Debian
    if setpriv is None:
        pytest.skip("root without setpriv: file permissions cannot be tested")
    return [setpriv, f"--bounding-set={_DAC}", f"--inh-caps={_DAC}"]


def run(*args: str, env: dict[str, str] | None = None,
        permissions: bool = False) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run ``python -m echoscreen ARGS`` with a wide terminal; capture its output.

    ``permissions``: file permissions apply even when the tests run as root.
    """
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    prefix = _unprivileged() if permissions else []
    return subprocess.run([*prefix, sys.executable, "-m", "echoscreen", *args],
                          capture_output=True, text=True, env=full_env, timeout=120)  # fmt: skip


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    """Run and require success; returns stdout."""
    res = run(*args, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    return res.stdout


def fails(*args: str, match: str, permissions: bool = False) -> str:
    """Run and require a clean failure whose output contains ``match``."""
    res = run(*args, permissions=permissions)
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stdout + res.stderr
    assert match in res.stdout + res.stderr, res.stdout + res.stderr
    return res.stdout + res.stderr
