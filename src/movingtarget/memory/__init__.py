"""The memory box: fingerprints of past queries and the stores that keep them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from movingtarget.memory.bloom import BloomStore
from movingtarget.memory.calibration import (
    Calibration,
    calibrate_radius,
    calibrate_robust,
    measure_robust,
)
from movingtarget.memory.fingerprints import ExactFingerprint, Fingerprint, canonical
from movingtarget.memory.neighbours import (
    NeighbourIndex,
    NeighbourMemory,
    PCAEncoder,
    PenultimateEncoder,
    RandomProjectionEncoder,
)
from movingtarget.memory.robust import RobustFingerprint
from movingtarget.memory.sqlite_store import SQLiteStore
from movingtarget.memory.stores import InProcessStore, Store, occurrences_before
from movingtarget.memory.urls import open_store

if TYPE_CHECKING:
    from movingtarget.memory.redis_store import RedisStore

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
        from movingtarget.memory.redis_store import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
