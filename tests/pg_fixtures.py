"""A throwaway PostgreSQL for the tests: a real server in a temp dir on a free loopback port.

`OFFLOAD_TEST_PG_URL` (a URL to a database whose user may CREATE DATABASE) names an existing
server instead. Every test gets a fresh database, created from template0 (fast: no data to copy).
The server binaries refuse to run as root; as root they run as the `postgres` system user.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    path = found[-1] if found else shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql; .ci/run does)")
    return path


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.getuid() == 0 else argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(argv: list[str]) -> None:
    done = subprocess.run(_as_server_user(argv), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")


@contextmanager
def throwaway_server() -> Iterator[str]:
    """A PostgreSQL server in a temp dir for as long as the block runs; its maintenance database's URL."""
    home = Path(tempfile.mkdtemp(prefix="offload-pg-"))
    home.chmod(0o777)  # the server user must own its data directory inside
    data, port = home / "data", _free_port()
    _run([_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
    # Durability is not under test here; fsync off keeps a 2-core machine's tests fast.
    opts = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    _run([_bin("pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-o", opts, "-w", "start"])
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _run([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A URL to the maintenance database of a running PostgreSQL (OFFLOAD_TEST_PG_URL, else a throwaway one)."""
    given = os.environ.get("OFFLOAD_TEST_PG_URL")
    if given:
        yield given
        return
    with throwaway_server() as url:
        yield url


def new_database(server_url: str) -> str:
    """A fresh, empty database on `server_url`'s server; its URL."""
    name = "offload_t_" + secrets.token_hex(5)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + name))
