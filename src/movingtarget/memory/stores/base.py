"""The one interface every store implements (see ``docs/memory.md``, "Stores").

Stores keep keyed hashes, never raw inputs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray


@runtime_checkable
class Store(Protocol):
    """A memory of fingerprints.

    ``observe`` is the one write: it records each key in arrival order and returns
    how many times that key had been seen *before* it (so a key twice in one batch
    is new the first time and a repeat the second).

    Examples
    --------
    >>> from movingtarget.memory.stores import InProcessStore
    >>> isinstance(InProcessStore(), Store)
    True
    """

    def observe(self, keys: NDArray[np.uint64], now: NDArray[np.int64]) -> NDArray[np.int64]:
        """Record ``keys`` (seen at times ``now``); return prior counts."""
        ...

    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        """Counts of ``keys`` without recording them."""
        ...

    def clear(self) -> None:
        """Forget everything."""
        ...

    def __len__(self) -> int:
        """Number of distinct keys stored."""
        ...
