"""The stores' documented semantics (TTL from first-seen time, capacity evicting the
oldest first-seen entries down to 90 %), one query at a time in plain Python: the
reference the property tests compare every store with."""

from __future__ import annotations


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
            keep = max(1, int(0.9 * self.capacity))
            newest = sorted(self.entries.items(), key=lambda kv: -kv[1][1])[:keep]
            self.entries = dict(newest)
        return prior

    def count(self, key: int) -> int:
        return self.entries.get(key, [0])[0]
