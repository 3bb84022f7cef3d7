"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from movingtarget.memory.stores._redis_launcher import RedisServer
from redis_server import running_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session (fails, never skips, if it is missing)."""
    with running_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the session's server."""
    return redis_server.url


REPO = Path(__file__).resolve().parents[1]
#: What tools (not tests) write into the clone: caches and the virtualenv.
TOOL_OUTPUT = {
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".mypy_cache",
    ".ruff_cache",
    ".venv",
    ".git",
}


def repo_entries() -> set[str]:
    """Files and folders at the top of the clone and of its source and test folders."""
    out = set()
    for folder in (REPO, REPO / "tests", REPO / "src", REPO / "src" / "movingtarget"):
        if folder.is_dir():
            for entry in os.scandir(folder):
                if entry.name not in TOOL_OUTPUT and not entry.name.endswith(".egg-info"):
                    out.add(os.path.relpath(entry.path, REPO))
    return out


@pytest.fixture(autouse=True)
def writes_only_under_tmp() -> Iterator[None]:
    """Fails the test that leaves a file in the clone: tests write under tmp_path only."""
    before = repo_entries()
    yield
    new = sorted(repo_entries() - before)
    if new:
        pytest.fail(f"the test left {', '.join(new)} in the clone; tests write under tmp_path")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The same check once more for the doctests of src/ (the fixture covers tests/)."""
    if BEFORE_SESSION is None:
        return
    new = sorted(repo_entries() - BEFORE_SESSION)
    if new:
        print(f"\nthe test run left {', '.join(new)} in the clone; tests write under tmp_path")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


BEFORE_SESSION: set[str] | None = repo_entries()
