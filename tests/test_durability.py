"""Durability as a choice: ``durability=process`` (a killed process loses nothing
acknowledged) or ``power`` (power loss neither): SQLite's synchronous level, and a
real Redis server checked for ``appendfsync always``."""

from __future__ import annotations

from pathlib import Path

import pytest

from movingtarget.errors import ConfigError
from movingtarget.gateway.access.base import KeyLimits
from movingtarget.gateway.access.keys import open_keys
from movingtarget.memory import open_store
from movingtarget.memory.stores._redis_launcher import RedisServer, find_redis_server

# PRAGMA synchronous reads back as 1 for NORMAL, 2 for FULL
NORMAL, FULL = 1, 2


def synchronous_of(store) -> int:
    return int(store._connection().execute("PRAGMA synchronous").fetchone()[0])


def test_sqlite_memory_durability(tmp_path: Path) -> None:
    default = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    power = open_store(f"sqlite:///{tmp_path / 'b.db'}?durability=power")
    try:
        assert synchronous_of(default) == NORMAL
        assert synchronous_of(power) == FULL
    finally:
        default.close()
        power.close()
    with pytest.raises(ConfigError, match="durability=power means synchronous=full"):
        open_store(f"sqlite:///{tmp_path / 'c.db'}?durability=power&synchronous=normal")
    with pytest.raises(ConfigError, match="durability must be one of"):
        open_store(f"sqlite:///{tmp_path / 'c.db'}?durability=disk")


def test_sqlite_key_store_durability(tmp_path: Path) -> None:
    for query, level in (("", NORMAL), ("?durability=power", FULL)):
        store = open_keys(f"sqlite:///{tmp_path / 'keys.db'}{query}")
        try:
            assert int(store._db.execute("PRAGMA synchronous").fetchone()[0]) == level
        finally:
            store.close()
    with pytest.raises(ConfigError, match="unknown option 'fsync'"):
        open_keys(f"sqlite:///{tmp_path / 'keys.db'}?fsync=1")


def redis(*args: str) -> RedisServer:
    if find_redis_server() is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
    return RedisServer(extra_args=args)


def test_redis_power_durability_needs_an_fsyncing_server(tmp_path: Path) -> None:
    # the launcher's default server keeps no append-only file: refused, saying what to set
    with redis() as server:
        with pytest.raises(ConfigError, match="appendonly yes and appendfsync always"):
            open_store(f"{server.url}?durability=power")
        with pytest.raises(ConfigError, match="appendfsync always"):
            open_keys(f"{server.url}?durability=power")
        open_store(f"{server.url}?durability=process").close()
    with redis("--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path)) as server:
        store = open_store(f"{server.url}?durability=power")
        store.close()
        keys = open_keys(f"{server.url}?durability=power")
        keys.create("alice", KeyLimits())
        keys.close()
