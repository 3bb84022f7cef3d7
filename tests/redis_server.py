"""A real ``redis-server`` for the tests: started on a free loopback port, stopped after.

The memory box's Redis store is tested against the real server, never a mock. When
``redis-server`` is missing the fixture *fails* with a message saying how to install
it (the test command installs it from Debian), so a missing service never passes
silently as a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from movingtarget.memory.stores._redis_launcher import RedisServer, find_redis_server

MISSING = (
    "redis-server is not installed, and the Redis store tests need a real server: "
    "install it (Debian/Ubuntu: apt-get install -y redis-server) and run the tests again"
)


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started :class:`RedisServer`; fails the test when redis-server is missing."""
    if find_redis_server() is None:
        pytest.fail(MISSING, pytrace=False)
    with RedisServer() as server:
        yield server
