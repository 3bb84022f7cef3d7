"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from movingtarget.memory._redis_launcher import RedisServer
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
