"""A gateway in a subprocess (``python -m movingtarget serve``) on a free loopback port:
started, probed until ready, stopped. Used by the tests and the gateway benchmark.

Each server runs in its own process group, which :meth:`GatewayProcess.stop` signals
as a whole (SIGTERM, then SIGKILL if it lingers); on Linux a server also gets SIGTERM
when the thread that launched it dies, so a test run that is killed leaves none behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
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


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux for SIGTERM when the launching thread dies
    (``PR_SET_PDEATHSIG``); ``None`` elsewhere. Looked up before the fork, so the child
    only calls a C function."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, ctypes.c_ulong(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return preexec


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
        out = self.log.open("ab") if self.log else None
        try:
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdout=out or subprocess.DEVNULL,
                stderr=out or subprocess.DEVNULL,
                pass_fds=(fd,),
                start_new_session=True,  # its own process group: stop() ends all of it
                preexec_fn=_die_with_parent(),
            )
        finally:
            if out is not None:
                out.close()  # the child has its own copy
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

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the server's process group (a graceful shutdown), SIGKILL if it
        lingers past ``timeout`` seconds; returns once the server has exited."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # not yet reaped, so its pid (= its group's id) cannot have been reused
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        self._signal_group(signal.SIGKILL)  # anything the server left in its group

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with suppress(ProcessLookupError):  # the group is already empty
            os.killpg(self.proc.pid, sig)

    def close(self) -> None:
        """Stop the server and release the port."""
        self.stop()
        self._socket.close()

    def __enter__(self) -> GatewayProcess:
        try:
            if self.proc is None:  # `with gw.launch():` waits for the one already launched
                self.launch()
            return self.wait_ready()
        except BaseException:
            self.close()  # __exit__ does not run when __enter__ raises
            raise

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextmanager
def running(*gateways: GatewayProcess) -> Iterator[tuple[GatewayProcess, ...]]:
    """Launch ``gateways`` side by side, wait until all are ready, and close every one
    on leaving, also when one fails to start or a launch raises.

    Examples
    --------
    >>> with running(GatewayProcess(), GatewayProcess()) as (a, b):  # doctest: +SKIP
    ...     httpx.get(b.url + "/healthz").status_code
    200
    """
    with ExitStack() as stack:
        for gw in gateways:
            stack.callback(gw.close)
        for gw in gateways:
            gw.launch()
        for gw in gateways:
            gw.wait_ready()
        yield gateways
