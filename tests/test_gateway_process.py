"""Gateway server processes started by tests and benchmarks never outlive them: closed
together when one of several fails to start, and gone when their launcher is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway_server import GatewayServer, gateway_env
from movingtarget.gateway.process import running

__all__ = ["gateway_env"]  # fixtures


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) ``movingtarget serve``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and b"serve" in cmdline


def test_running_closes_every_server_when_one_fails(tmp_path: Path, gateway_env):
    good = GatewayServer(env=gateway_env, log=tmp_path / "good.log")
    bad = GatewayServer("--model", "no-such-model", env=gateway_env, log=tmp_path / "bad.log")
    with pytest.raises(RuntimeError, match="exited"), running(good, bad):
        pass
    assert good.proc is not None and good.proc.poll() is not None
    assert good._socket.fileno() == -1  # the port is released too


LAUNCHER = """
import sys
from movingtarget.gateway.process import GatewayProcess
gw = GatewayProcess().start()
print(gw.proc.pid, flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_server_dies_with_the_process_that_launched_it(gateway_env):
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER],
        env={**os.environ, **gateway_env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert launcher.stdout is not None
    pid = int(launcher.stdout.readline())
    try:
        assert alive(pid)
        launcher.kill()  # SIGKILL: no cleanup code of the launcher runs
        launcher.wait()
        deadline = time.monotonic() + 60  # a bound on the wait, not a timing
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        launcher.kill()
        launcher.wait()
        for pipe in (launcher.stdin, launcher.stdout):
            if pipe is not None:
                pipe.close()
