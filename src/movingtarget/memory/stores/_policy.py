"""The bounds every store shares: checking ``ttl``/``capacity`` and applying the TTL rule
to one batch on the client side (the SQLite store; Redis applies it in Lua).

The rule, the same for every store (see ``docs/memory.md``):

* **TTL.** An entry expires ``ttl`` after its *first-seen* time. A query at time ``t``
  whose key's entry has ``first_seen <= t - ttl`` counts as new (prior count 0) and
  starts a fresh entry with first-seen ``t``. The store's *clock* is the latest ``now``
  it has observed; after each batch, entries with ``first_seen <= clock - ttl`` are
  forgotten, so ``lookup`` and ``len`` only ever see live entries.
* **Capacity.** When, after a batch, more than ``capacity`` distinct live keys are
  stored, exactly the excess is evicted, oldest first-seen first, so a full store keeps
  ``keep_after_eviction(capacity) = capacity`` entries and each batch evicts about as
  many entries as it adds (no pass over the whole store). Ties in first-seen time:
  the lower key, read as a signed int64 (:func:`eviction_order`), goes first.
"""

from __future__ import annotations

from typing import Self

import numpy as np
from numpy.typing import NDArray

from movingtarget.errors import ConfigError


def check_bounds(ttl: int | None, capacity: int | None, where: str) -> None:
    """Raise :class:`ConfigError` unless ``ttl`` and ``capacity`` are None or positive ints."""
    for name, value in (("ttl", ttl), ("capacity", capacity)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ConfigError(f"{where}: {name} must be a positive integer, got {value!r}")


def keep_after_eviction(capacity: int) -> int:
    """How many entries a store keeps when it evicts for exceeding ``capacity``: all it
    may hold, so each batch evicts only its excess."""
    return capacity


def eviction_order(key: int, first_seen: int) -> tuple[int, int]:
    """The sort key of the eviction order: oldest first-seen first, then the lower key
    read as a signed int64 (SQLite's ``ORDER BY first_seen, key``; the in-process heap
    and the Redis sorted set's members are encoded to agree).

    >>> sorted([(2**64 - 1, 5), (1, 5), (7, 3)], key=lambda e: eviction_order(*e))
    [(7, 3), (18446744073709551615, 5), (1, 5)]
    """
    signed = key - (1 << 64) if key >= 1 << 63 else key
    return first_seen, signed


def settle_batch(
    keys: NDArray[np.int64],
    now: NDArray[np.int64],
    stored_keys: NDArray[np.int64],
    stored_counts: NDArray[np.int64],
    stored_first: NDArray[np.int64],
    ttl: int | None,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Prior counts of one batch and the entries to write back.

    ``keys``/``now`` are the batch in arrival order; ``stored_*`` the entries found in
    the store for some of its keys (any order). Returns ``(prior, uniq, count, first)``:
    the prior count of every query and, per distinct key, its count and first-seen
    time after the batch. Vectorized; a Python loop serves only keys whose entry
    expires *during* the batch (rare: the batch must span the TTL).

    >>> k = np.array([4, 9, 4], np.int64)
    >>> prior, uniq, count, first = settle_batch(
    ...     k, np.array([10, 11, 12]), np.array([4]), np.array([2]), np.array([1]), None)
    >>> prior.tolist(), uniq.tolist(), count.tolist(), first.tolist()
    ([2, 0, 3], [4, 9], [4, 1], [1, 11])
    """
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = ranked[1:] != ranked[:-1]
    start_at = np.flatnonzero(starts)
    group = np.cumsum(starts) - 1
    uniq = ranked[start_at]
    n_in_batch = np.diff(np.append(start_at, len(keys)))
    t_first = now[order[start_at]]  # stable sort: each group's earliest arrival

    base = np.zeros(len(uniq), dtype=np.int64)
    first = t_first.copy()
    if len(stored_keys):
        where = np.searchsorted(uniq, stored_keys)
        base[where] = stored_counts
        first[where] = stored_first
    rank = np.arange(len(keys)) - start_at[group]
    prior = np.empty(len(keys), dtype=np.int64)

    slow = np.zeros(len(uniq), dtype=bool)
    if ttl is not None:
        t_max = np.maximum.reduceat(now[order], start_at)
        expired_first = (base > 0) & (first <= t_first - ttl)
        base = np.where(expired_first, 0, base)
        first = np.where(base == 0, t_first, first)
        # each entry is now live at its key's first query; only one that expires before
        # the key's latest query in this batch needs the exact loop below
        slow = first <= t_max - ttl
    prior[order] = base[group] + rank
    count = base + n_in_batch

    span = int(ttl or 0)
    for g in np.flatnonzero(slow).tolist():
        rows = order[start_at[g] : start_at[g] + n_in_batch[g]]
        c, f = int(base[g]), int(first[g])
        for row in rows.tolist():
            t = int(now[row])
            if c and f <= t - span:
                c, f = 0, t
            prior[row] = c
            c += 1
        count[g], first[g] = c, f
    return prior, uniq, count, first


def settle_small(
    keys: list[int], now: list[int], entries: dict[int, list[int]], ttl: int | None
) -> list[int]:
    """:func:`settle_batch` for a few queries, in plain Python (numpy's fixed cost per
    call dominates there). ``entries`` maps each stored key to ``[count, first_seen]``
    and is updated in place; returns the prior counts.

    >>> entries = {4: [2, 1]}
    >>> settle_small([4, 9, 4], [10, 11, 12], entries, None), entries
    ([2, 0, 3], {4: [4, 1], 9: [1, 11]})
    """
    prior = []
    for k, t in zip(keys, now, strict=True):
        entry = entries.get(k)
        if entry is None:
            entry = entries[k] = [0, t]
        elif ttl is not None and entry[0] and entry[1] <= t - ttl:
            entry[0], entry[1] = 0, t  # expired: a fresh entry
        prior.append(entry[0])
        entry[0] += 1
    return prior


class ClosedOnExit:
    """Mixin for stores holding connections: ``with store:`` closes it after the block."""

    def close(self) -> None:
        """Release what the store holds open."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
