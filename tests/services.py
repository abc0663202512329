"""Real services for the tests, started privately on loopback: PostgreSQL.

``postgres_server`` (session scope) runs a throw-away PostgreSQL cluster made with
the Debian server binaries (``/usr/lib/postgresql/*/bin``): ``initdb`` in a temp
dir, ``pg_ctl`` on a free 127.0.0.1 port with its unix socket in the same temp dir,
password (SCRAM) authentication over TCP. As root the server runs as the
``postgres`` OS user (``runuser``). ``postgres_url`` (function scope) gives each test
a fresh, empty database: ``postgresql://echoscreen:PASSWORD@127.0.0.1:PORT/DB``.

Without the binaries the fixtures skip locally and fail in CI (``need``).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROLE = "echoscreen"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: Path(p).parts[4])
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    """A running private PostgreSQL cluster.

    Attributes:
        host: always ``127.0.0.1``.
        port: TCP port.
        socket_dir: directory of its unix socket (superuser access, trust auth).
        password: password of role ``echoscreen``.
    """

    host: str
    port: int
    socket_dir: Path
    password: str

    def admin(self, sql: str) -> None:
        """Run one SQL statement as the superuser (autocommit)."""
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self) -> str:
        """Create an empty database owned by ``echoscreen``; return its ``postgresql://`` URL."""
        name = f"t_{secrets.token_hex(6)}"
        self.admin(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        return f"postgresql://{ROLE}:{self.password}@{self.host}:{self.port}/{name}"


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _start(bindir: Path, root: Path) -> PostgresServer:
    data, log = root / "data", root / "server.log"
    pwfile = root / "pw"
    password = secrets.token_hex(12)
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                      "--auth-local=trust", "--auth-host=scram-sha-256",
                      f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"]),
        check=True, capture_output=True,
    )  # fmt: skip
    port = _free_port()
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log),
                      "-o", opts, "-w", "-t", "60", "start"]),
        check=True, capture_output=True,
    )  # fmt: skip
    server = PostgresServer("127.0.0.1", port, root, password)
    for _ in range(100):  # pg_ctl -w waited already; be sure TCP answers too
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    server.admin(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'")
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster on loopback for the whole test session."""
    from tests.conftest import need

    bindir = _pg_bin()
    need(bindir is not None and shutil.which("runuser") is not None, "PostgreSQL server (initdb)")
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="echoscreen-pg-"))
    try:
        try:
            server = _start(bindir, root)
        except subprocess.CalledProcessError as exc:
            log = root / "server.log"
            detail = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(f"PostgreSQL did not start: {exc.stderr!r} {detail}")
        yield server
    finally:
        if (root / "data" / "postmaster.pid").exists():
            subprocess.run(
                _as_postgres([str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast",
                              "-w", "stop"]),
                capture_output=True,
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of a fresh, empty PostgreSQL database on the session's private server."""
    return postgres_server.new_database()
