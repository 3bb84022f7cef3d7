"""Start a throwaway ``redis-server`` on a free loopback port (tests and benchmarks).

Not part of the public API: a deployed gateway points :class:`RedisStore` at a
server someone else runs. The server here keeps nothing on disk (``--save ''
--appendonly no``), listens on 127.0.0.1 only, and is stopped on exit.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from movingtarget.errors import ConfigError

_START_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_redis_server() -> str | None:
    """Path of the ``redis-server`` executable, or None when it is not installed."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


def _answers_ping(port: int) -> bool:
    # a raw RESP PING, so the launcher works without the redis package
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private ``redis-server`` process; use as a context manager.

    Examples
    --------
    >>> with RedisServer() as server:  # doctest: +SKIP
    ...     print(server.url)
    redis://127.0.0.1:40123/0
    """

    def __init__(self, executable: str | None = None, *, extra_args: tuple[str, ...] = ()) -> None:
        found = executable or find_redis_server()
        if found is None:
            raise ConfigError(
                "redis-server is not installed; install it (Debian: apt-get install redis-server)"
            )
        self.executable = found
        self.extra_args = extra_args
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the running server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING (a few tries on a port race)."""
        self._dir = tempfile.TemporaryDirectory(prefix="movingtarget-redis-")
        log = Path(self._dir.name) / "redis.log"
        for _ in range(5):
            self.port = free_port()
            args = [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
                "--logfile", str(log),
                *self.extra_args,
            ]  # fmt: skip
            self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + _START_TIMEOUT_S
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _answers_ping(self.port):
                    return self
                time.sleep(0.02)
            # exited (most likely: another process took the port first) or hung: retry
            self._kill()
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        self.stop()
        raise ConfigError(f"redis-server ({self.executable}) did not start: {detail.strip()}")

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        self._kill()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
