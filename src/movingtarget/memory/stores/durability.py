"""What an acknowledged answer guarantees about the memory and key stores it wrote.

=========  =====================================================================
``process``  the default: a write survives the gateway process being killed
             (``kill -9``, a crash). SQLite runs ``synchronous=NORMAL`` in WAL mode:
             committed data is in the OS before the answer, but the last
             transactions may be lost if the machine loses power. Redis: whatever
             persistence the server is configured with (the gateway checks nothing).
``power``    also survives power loss or an OS crash: SQLite runs
             ``synchronous=FULL`` (the WAL is synced at every commit); a Redis server
             must run ``appendonly yes`` with ``appendfsync always`` (it syncs its
             append-only file before it replies), which the store checks when it
             opens and refuses to run without.
=========  =====================================================================
"""

from __future__ import annotations

from typing import Any

from movingtarget.errors import ConfigError

#: The durability levels, weakest first.
DURABILITY = ("process", "power")


def check_durability(value: str, where: str) -> str:
    """``value`` if it is a durability level, else a :class:`ConfigError` naming it.

    >>> check_durability("power", "store")
    'power'
    """
    if value not in DURABILITY:
        raise ConfigError(f"{where}: durability must be one of {DURABILITY}, got {value!r}")
    return value


def sqlite_synchronous(durability: str) -> str:
    """The SQLite ``synchronous`` setting of a durability level.

    >>> sqlite_synchronous("process"), sqlite_synchronous("power")
    ('normal', 'full')
    """
    return {"process": "normal", "power": "full"}[check_durability(durability, "sqlite")]


def check_redis_durability(client: Any, durability: str, where: str) -> None:
    """Refuse (:class:`ConfigError`) a Redis server that cannot give ``durability``:
    ``power`` needs ``appendonly yes`` and ``appendfsync always``."""
    if check_durability(durability, where) != "power":
        return
    try:
        got = {}
        for name in ("appendonly", "appendfsync"):
            reply = client.config_get(name)
            got[name] = str(reply.get(name, reply.get(name.encode(), b"")))
    except Exception as exc:  # CONFIG disabled (managed Redis) or unreachable
        raise ConfigError(
            f"{where}: durability=power needs CONFIG GET to check the server's "
            f"persistence, which failed ({type(exc).__name__})"
        ) from None
    values = {k: v.strip("b'\"") for k, v in got.items()}
    if values.get("appendonly") != "yes" or values.get("appendfsync") != "always":
        raise ConfigError(
            f"{where}: durability=power needs the Redis server to run appendonly yes and "
            f"appendfsync always (it runs appendonly {values.get('appendonly')}, appendfsync "
            f"{values.get('appendfsync')}); set them, or use durability=process"
        )
