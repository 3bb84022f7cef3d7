"""The memory box: fingerprints of past queries and the stores that keep them.

Layout: two halves and what sits above and below them.

=====================================  ================================================
module                                 holds
=====================================  ================================================
:mod:`~movingtarget.memory.fingerprints`  what a query is keyed by: exact and robust
                                       fingerprints, the neighbour memory, calibration
:mod:`~movingtarget.memory.stores`     where keys are kept: the ``Store`` interface,
                                       in-process, Bloom, SQLite and Redis stores, store
                                       URLs, the TTL/capacity policy, durability
``_keys``                              ``occurrences_before``, shared by both halves
                                       (imports neither)
``tenancy``                            :class:`~movingtarget.memory.tenancy.TenantMemory`:
                                       a policy over several stores for the gateway's
                                       tenants (uses stores, is not one)
``corrections``                        the correction mechanism's label back ends
                                       (key -> class, not counts)
``asked``                              the gateway's labeling queue (holds inputs
                                       themselves, not keyed hashes)
=====================================  ================================================

``tenancy``, ``corrections`` and ``asked`` stay at the top: none is a fingerprint nor a
fingerprint store; they build on the stores' back ends (SQLite and Redis helpers, store
URLs) to keep other state beside the memory. Imports go one way, bottom to top:
``_keys`` -> ``fingerprints`` -> ``stores`` -> ``tenancy``/``corrections``/``asked``
-> this package's re-exports; modules import each other by module path, never through
a package ``__init__``, and ``tests/test_memory_layout.py`` imports each module alone in
a fresh interpreter and walks the imports, so a circle fails a test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from movingtarget.memory._keys import occurrences_before
from movingtarget.memory.fingerprints import (
    Calibration,
    ExactFingerprint,
    Fingerprint,
    NeighbourIndex,
    NeighbourMemory,
    PCAEncoder,
    PenultimateEncoder,
    RandomProjectionEncoder,
    RobustFingerprint,
    calibrate_radius,
    calibrate_robust,
    canonical,
    measure_robust,
)
from movingtarget.memory.stores import (
    BloomStore,
    InProcessStore,
    SQLiteStore,
    Store,
    open_store,
)

if TYPE_CHECKING:
    from movingtarget.memory.stores.redis_store import RedisStore

__all__ = [
    "BloomStore",
    "Calibration",
    "ExactFingerprint",
    "Fingerprint",
    "InProcessStore",
    "NeighbourIndex",
    "NeighbourMemory",
    "PCAEncoder",
    "PenultimateEncoder",
    "RandomProjectionEncoder",
    "RedisStore",
    "RobustFingerprint",
    "SQLiteStore",
    "Store",
    "calibrate_radius",
    "calibrate_robust",
    "canonical",
    "measure_robust",
    "occurrences_before",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # RedisStore needs the optional ``redis`` package (the ``memory`` extra): import it
    # only when asked for, so the core install still imports this box
    if name == "RedisStore":
        from movingtarget.memory.stores.redis_store import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
