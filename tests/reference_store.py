"""The stores' documented semantics (TTL from first-seen time, capacity evicting exactly
the excess, oldest first-seen first, ties by the key read as a signed int64), one query
at a time in plain Python: the reference the property tests compare every store with."""

from __future__ import annotations


def signed(key: int) -> int:
    """A 64-bit key read as a signed int64 (the tie order among equal first-seen times)."""
    key &= (1 << 64) - 1
    return key - (1 << 64) if key >= 1 << 63 else key


class ReferenceStore:
    """The documented semantics, one query at a time, in plain Python."""

    def __init__(self, ttl: int | None = None, capacity: int | None = None) -> None:
        self.ttl, self.capacity = ttl, capacity
        self.entries: dict[int, list[int]] = {}  # key -> [count, first_seen]
        self.clock: int | None = None

    def observe(self, keys: list[int], now: list[int]) -> list[int]:
        prior = []
        for k, t in zip(keys, now, strict=True):
            count, first = self.entries.get(k, [0, t])
            if count and self.ttl is not None and first <= t - self.ttl:
                count, first = 0, t  # expired: a fresh entry
            prior.append(count)
            self.entries[k] = [count + 1, first]
        self.clock = max(now) if self.clock is None else max(self.clock, *now)
        if self.ttl is not None:
            cutoff = self.clock - self.ttl
            self.entries = {k: e for k, e in self.entries.items() if e[1] > cutoff}
        if self.capacity is not None and len(self.entries) > self.capacity:
            excess = len(self.entries) - self.capacity
            oldest = sorted(self.entries, key=lambda k: (self.entries[k][1], signed(k)))
            for k in oldest[:excess]:
                del self.entries[k]
        return prior

    def count(self, key: int) -> int:
        return self.entries.get(key, [0])[0]
