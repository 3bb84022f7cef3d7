"""Stores: where the memory box keeps fingerprint keys, with a count and a first-seen time.

Layout (one half of :mod:`movingtarget.memory`; the other is
:mod:`movingtarget.memory.fingerprints`):

====================  =================================================================
module                holds
====================  =================================================================
``base``              the :class:`Store` interface every store implements
``inprocess``         :class:`InProcessStore`, a hash table in this process (default)
``_hashtable``        its compiled (numba) probing loops, loaded on first use
``bloom``             :class:`BloomStore`: membership only, a few bytes a key
``sqlite_store``      :class:`SQLiteStore`: one machine, survives restarts
``redis_store``       :class:`RedisStore`: shared by processes and hosts (needs the
                      optional ``redis`` package, imported only when asked for)
``urls``              :func:`open_store`: a store from its URL, and ``backend_of``
``redaction``         ``redact``: a URL with its password hidden (imports nothing of
                      the memory box, so any store can use it)
``_policy``           the TTL and capacity rule every store shares
``durability``        what an acknowledged write survives (``process``, ``power``)
``_redis_launcher``   a throwaway ``redis-server`` for tests and benchmarks
====================  =================================================================

Imports go one way: ``urls`` opens the back ends, and no back end imports ``urls``
(they import ``redaction``, ``_policy`` and ``durability``, which import no store).
The stores import from :mod:`movingtarget.memory.fingerprints` only the splitmix64
finaliser the Bloom store remixes keys with; nothing there imports a store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from movingtarget.memory.stores.base import Store
from movingtarget.memory.stores.bloom import BloomStore
from movingtarget.memory.stores.inprocess import InProcessStore
from movingtarget.memory.stores.sqlite_store import SQLiteStore
from movingtarget.memory.stores.urls import open_store

if TYPE_CHECKING:
    from movingtarget.memory.stores.redis_store import RedisStore

__all__ = [
    "BloomStore",
    "InProcessStore",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # RedisStore needs the optional ``redis`` package (the ``memory`` extra): import it
    # only when asked for, so the core install still imports this box
    if name == "RedisStore":
        from movingtarget.memory.stores.redis_store import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
