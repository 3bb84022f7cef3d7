"""A gateway in a subprocess (``python -m movingtarget serve``) on a free loopback port:
started, probed until ready, stopped. Used by the tests and the gateway benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx


def listening_socket() -> socket.socket:
    """A socket bound to a free loopback port and listening. The server inherits it
    (``serve --fd``), so no other process can take the port between choosing it and
    serving on it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(2048)
    return s


class GatewayProcess:
    """``movingtarget serve ARGS...`` on a free port; ``url`` once started.

    ``env`` adds to the environment (``MOVINGTARGET_CACHE``, ``MOVINGTARGET_SECRET``);
    ``log`` receives the server's output.

    Examples
    --------
    >>> with GatewayProcess("--keys-db", "sqlite:///k.db") as gw:   # doctest: +SKIP
    ...     httpx.get(gw.url + "/healthz").json()["status"]
    'ok'
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None, log: Path | None = None):
        self.args = list(args)
        self._socket = listening_socket()  # kept open: a restart serves on it again
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> GatewayProcess:
        """Start the process without waiting (start several, then :meth:`wait_ready`)."""
        fd = self._socket.fileno()
        cmd = [sys.executable, "-m", "movingtarget", "serve", "--fd", str(fd), *self.args]
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=out, pass_fds=(fd,))
        return self

    def wait_ready(self, timeout: float = 120.0) -> GatewayProcess:
        """Wait until ``/healthz`` answers 200; raise if the process dies or never does."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-2000:] if self.log else ""
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {tail}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        tail = self.log.read_text()[-2000:] if self.log else ""
        raise RuntimeError(f"gateway on {self.url} not ready in {timeout} s: {tail}")

    def start(self) -> GatewayProcess:
        """Start and wait until ready."""
        return self.launch().wait_ready()

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        """Stop the server and release the port."""
        self.stop()
        self._socket.close()

    def __enter__(self) -> GatewayProcess:
        if self.proc is None:  # `with gw.launch():` waits for the one already launched
            self.launch()
        return self.wait_ready()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
