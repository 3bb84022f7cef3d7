"""Run the ``movingtarget`` command line in a child process, as a user would (imported
by the tests that check what a command prints and how it exits)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``python -m movingtarget ARGS`` in ``cwd``, its model cache under ``cwd`` (a test
    never shares the user's), with ``env`` added to this process's environment."""
    base = {**os.environ, "MOVINGTARGET_CACHE": str(Path(cwd or ".") / ".mt-cache")}
    return subprocess.run(
        [sys.executable, "-m", "movingtarget", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        timeout=timeout,
    )
