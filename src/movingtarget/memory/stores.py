"""Stores: where the memory box keeps fingerprints (count and first-seen time).

One interface, several back ends. Stores keep keyed hashes, never raw inputs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

_SMALL_BATCH = 32


def occurrences_before(keys: NDArray[np.uint64]) -> NDArray[np.int64]:
    """For each position, how many earlier positions in ``keys`` hold the same key.

    >>> occurrences_before(np.array([5, 7, 5, 5, 7], dtype=np.uint64)).tolist()
    [0, 0, 1, 2, 1]
    """
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = ranked[1:] != ranked[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))
    out = np.empty(len(keys), dtype=np.int64)
    out[order] = np.arange(len(keys)) - group_start
    return out


@runtime_checkable
class Store(Protocol):
    """A memory of fingerprints.

    ``observe`` is the one write: it records each key in arrival order and returns
    how many times that key had been seen *before* it (so a key twice in one batch
    is new the first time and a repeat the second).
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


class InProcessStore:
    """A dict in this process: fastest, gone when the process ends.

    Examples
    --------
    >>> s = InProcessStore()
    >>> s.observe(np.array([1, 2, 1], np.uint64), np.arange(3)).tolist()
    [0, 0, 1]
    >>> s.lookup(np.array([1, 3], np.uint64)).tolist()
    [2, 0]
    """

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._first_seen: dict[int, int] = {}

    def observe(self, keys: NDArray[np.uint64], now: NDArray[np.int64]) -> NDArray[np.int64]:
        keys = np.asarray(keys, dtype=np.uint64)
        if len(keys) <= _SMALL_BATCH:
            return self._observe_small(keys.tolist(), np.asarray(now).tolist())
        uniq, first, inverse, batch_counts = np.unique(
            keys, return_index=True, return_inverse=True, return_counts=True
        )
        counts = self._counts
        ukeys = uniq.tolist()
        stored = np.fromiter((counts.get(k, 0) for k in ukeys), dtype=np.int64, count=len(ukeys))
        prior = stored[inverse] + (occurrences_before(keys) if len(uniq) < len(keys) else 0)
        times = np.asarray(now, dtype=np.int64)[first].tolist()
        first_seen = self._first_seen
        for k, c, s, t in zip(ukeys, batch_counts.tolist(), stored.tolist(), times, strict=True):
            counts[k] = s + c
            if s == 0:
                first_seen[k] = t
        return np.asarray(prior, dtype=np.int64)

    def _observe_small(self, keys: list[int], now: list[int]) -> NDArray[np.int64]:
        # a plain loop beats numpy's fixed per-call cost for the arena's single queries
        counts, first_seen = self._counts, self._first_seen
        prior = []
        for k, t in zip(keys, now, strict=True):
            c = counts.get(k, 0)
            prior.append(c)
            counts[k] = c + 1
            if c == 0:
                first_seen[k] = t
        return np.array(prior, dtype=np.int64)

    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        counts = self._counts
        return np.fromiter(
            (counts.get(k, 0) for k in np.asarray(keys, np.uint64).tolist()),
            dtype=np.int64,
            count=len(keys),
        )

    def first_seen(self, key: int) -> int | None:
        """Time the key was first observed, or None."""
        return self._first_seen.get(int(key))

    def clear(self) -> None:
        self._counts.clear()
        self._first_seen.clear()

    def __len__(self) -> int:
        return len(self._counts)
