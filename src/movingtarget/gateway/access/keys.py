"""Opening a key store by its URL (:func:`open_keys`).

Stores: SQLite (one machine; also the default,
:mod:`~movingtarget.gateway.access.keys_sqlite`) and Redis (shared by every replica,
limits enforced by one atomic Lua script, :mod:`~movingtarget.gateway.access.keys_redis`).
The keys themselves — records, limits, tokens and the store protocol — are in
:mod:`~movingtarget.gateway.access.base`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from movingtarget.errors import ConfigError
from movingtarget.gateway.access.base import KeyStore


def default_keys_url() -> str:
    """``$MOVINGTARGET_KEYS`` if set, else ``sqlite:///movingtarget-keys.db`` in the
    working directory."""
    import os

    return os.environ.get("MOVINGTARGET_KEYS", "sqlite:///movingtarget-keys.db")


def open_keys(url: str | None = None, *, namespace: str = "mt") -> KeyStore:
    """The key store that ``url`` names: ``sqlite:///PATH`` (or a plain path) or
    ``redis://HOST:PORT/DB``, optionally with ``?durability=power`` (what an acknowledged
    charge or feedback survives: :mod:`movingtarget.memory.stores.durability`).

    >>> import tempfile, os
    >>> from movingtarget.gateway.access.base import KeyLimits, token_digest
    >>> store = open_keys(os.path.join(tempfile.mkdtemp(), "keys.db"))
    >>> record, token = store.create("alice", KeyLimits())
    >>> store.authorize(token_digest(token), 1).name
    'alice'
    """
    from urllib.parse import parse_qsl

    from movingtarget.memory.stores.durability import check_durability

    url = url or default_keys_url()
    base, _, query = url.partition("?")
    durability = "process"
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != "durability":
            raise ConfigError(f"keys store {base!r}: unknown option {name!r}; it takes durability")
        durability = check_durability(value, f"keys store {base!r}")
    scheme = urlsplit(base).scheme
    if scheme in ("redis", "rediss", "unix"):
        from movingtarget.gateway.access.keys_redis import RedisKeyStore

        return RedisKeyStore(base, namespace=namespace, durability=durability)
    if scheme == "sqlite":
        # SQLAlchemy's form: sqlite:///relative.db, sqlite:////absolute/path.db
        path = base[len("sqlite:///") :] if base.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"keys store {base!r}: write sqlite:///PATH")
    elif scheme == "" or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        path = base
    else:
        raise ConfigError(
            f"keys store {base!r}: unknown scheme {scheme!r}; use sqlite:///PATH or "
            "redis://HOST:PORT/DB"
        )
    from movingtarget.gateway.access.keys_sqlite import SQLiteKeyStore

    return SQLiteKeyStore(Path(path), url=base, durability=durability)
