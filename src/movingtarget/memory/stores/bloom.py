"""A compact membership memory: a blocked Bloom filter behind the Store interface.

The near-repeat gate only asks *was this band key seen before?*; it needs neither a
count nor a first-seen time. A Bloom filter answers that in a few bits a key instead
of a hash-table slot (24 bytes, at most 60 % full), at the price of a small, designed
false-positive rate and no deletions.

Layout (a *blocked* Bloom filter, Putze, Sanders and Singler, 2007): the filter is
``blocks`` blocks of 512 bits (8 uint64 words: one cache line). A key picks one block
and sets ``k`` bits inside it, so a lookup or insert touches one cache line, not ``k``.
Keys are already keyed, uniformly random 64-bit digests; they are remixed anyway with
the splitmix64 finaliser (so sequential test keys behave too): ``mix(key)`` chooses the
block, and ``mix(key + j * golden)`` for ``j = 1, 2, ...`` give 7 bit positions of 9
bits each, ``k`` positions in all (independent positions, drawn with replacement).

Sizing. With ``c`` bits per key the keys in a block are about Poisson with mean
``lam = 512 / c``, and a fresh key is a false positive with probability

    FP(c, k) = sum_{i >= 0} Poisson(i; lam) * (1 - (1 - 1/512)^(k i))^k

(the standard Bloom rate of one 512-bit filter holding ``i`` keys, averaged over the
blocks). :func:`design` picks, for the target rate, the ``k`` that needs the fewest
bits per key and the smallest ``c`` meeting the target; the filter holds
``ceil(capacity * c / 512)`` blocks. For ``false_positive=1e-6`` that is ``k = 16``
and 38.5 bits (4.8 bytes) per key: 77 bytes for a query's 16 band keys (a standard,
unblocked filter would need 28.8 bits, but ``k`` cache misses a key).
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from movingtarget.errors import ConfigError

# the splitmix64 finaliser the exact fingerprint uses: every input bit reaches every output bit
from movingtarget.memory.fingerprints.exact import _mix64 as _mix
from movingtarget.memory.fingerprints.exact import _mix64_int as _mix_int

BLOCK_BITS = 512  # one 64-byte cache line
_WORDS = BLOCK_BITS // 64
_POS_BITS = 9  # log2(BLOCK_BITS)
_PER_WORD = 64 // _POS_BITS  # positions drawn from one remixed word
_MAX_K = 64
_SMALL_BATCH = 32
_CHUNK = 1 << 16  # keys per vectorized step: the (n, 8) masks stay in the caches
_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def blocked_false_positive(bits_per_key: float, k: int) -> float:
    """False-positive rate of a blocked Bloom filter (512-bit blocks, ``k`` bits a key)
    holding keys at ``bits_per_key`` bits each (formula in the module docstring).

    >>> round(blocked_false_positive(32.0, 16) * 1e6, 2)
    5.12
    """
    if bits_per_key <= 0:
        return 1.0
    lam = BLOCK_BITS / bits_per_key
    top = int(lam + 12 * math.sqrt(lam) + 30)
    i = np.arange(top + 1, dtype=np.float64)
    lgam = np.array([math.lgamma(v + 1) for v in i])
    pmf = np.exp(i * math.log(lam) - lam - lgam)
    per_block = (1.0 - (1.0 - 1.0 / BLOCK_BITS) ** (k * i)) ** k
    return float(min(1.0, (pmf * per_block).sum()))


@lru_cache(maxsize=64)
def design(false_positive: float) -> tuple[int, float]:
    """``(k, bits_per_key)``: the fewest bits per key whose blocked rate is at most
    ``false_positive``, over ``k = 1 .. 64``.

    >>> k, c = design(1e-6)
    >>> k, round(c, 1)
    (16, 38.5)
    """
    best: tuple[int, float] | None = None
    for k in range(1, _MAX_K + 1):
        lo, hi = 0.5, 512.0
        if blocked_false_positive(hi, k) > false_positive:
            continue
        for _ in range(40):  # bisection: the rate falls as bits per key grow
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if blocked_false_positive(mid, k) <= false_positive else (mid, hi)
        if best is None or hi < best[1]:
            best = (k, hi)
    if best is None:
        raise ConfigError(f"bloom store: fp={false_positive!r} is out of reach of 512-bit blocks")
    return best


class BloomStore:
    """Membership memory in a blocked Bloom filter: a few bytes per key, no counts.

    Implements the :class:`~movingtarget.memory.stores.Store` interface with
    *membership* semantics: ``observe`` returns 1 where the key was (probably) seen
    before, earlier in the same batch included, else 0; ``lookup`` likewise without
    recording. Never a false negative (an observed, unexpired key is always found); a
    fresh key is reported seen with the false-positive rate the filter was sized for
    (:meth:`expected_false_positive` while the filter fills).

    Parameters
    ----------
    capacity_keys:
        Keys the filter is sized for (with a TTL: per generation, see below). More may
        be inserted; the false-positive rate then rises above the design and
        :attr:`saturated` turns True. Not an eviction bound: nothing is ever evicted.
    false_positive:
        Designed rate at ``capacity_keys`` keys: ``k`` and bits per key come from
        :func:`design` (``1e-6``: ``k = 16``, 38.5 bits a key).
    ttl:
        Forgetting, in the units of ``now``, by two generations (below). None: never.

    **TTL by generations.** A Bloom filter cannot delete one key, so with a TTL it keeps
    two filters: *current* and *previous*, each sized for ``capacity_keys`` keys at
    ``1 - sqrt(1 - false_positive)`` (so both together stay at ``false_positive``).
    Time is cut into periods of ``L = ttl // 2`` (``ttl >= 2``); a query at time ``t``
    belongs to period ``t // L``. When a query of a later period arrives, the filters
    rotate: current becomes previous and a fresh current starts (two periods later or
    more: both start fresh). Every observed key is set in current; a key counts as seen
    when it is in either filter. So a key last observed at ``t`` is found by every query
    at ``t' <= t + L`` and by none at ``t' >= t + 2 L`` (it expires between ``ttl / 2``
    and ``ttl`` after its latest observation). Unlike the other stores, a repeat
    refreshes the key: without per-key times the only way never to lose a key inside
    its window is to set it again. Times should not run backwards (a query from an
    older period counts in the current one).

    ``len(store)``: keys a generation held as new when observed (keys absent from that
    generation before), summed over live generations: approximate, as a key found
    falsely positive is not counted and a key refreshed into current counts in both.

    Batches: the filter as it was before the batch, plus exact earlier copies of a key
    in the batch (one sort), answer ``observe``; the bits of a whole batch are then set
    at once (word updates grouped with ``np.bitwise_or.reduceat``, so none is lost).
    Large batches go in chunks of 65,536 keys; batches of at most 32 keys take a
    plain-Python path with the same bits.

    Examples
    --------
    >>> s = BloomStore(1000)
    >>> s.observe(np.array([1, 2, 1], np.uint64), np.arange(3)).tolist()
    [0, 0, 1]
    >>> s.lookup(np.array([1, 3], np.uint64)).tolist()
    [1, 0]
    >>> len(s), s.k, s.saturated
    (2, 16, False)
    >>> t = BloomStore(1000, ttl=10)   # periods of 5: kept at least 5, at most 10
    >>> t.observe(np.array([7, 7, 7], np.uint64), np.array([0, 9, 19])).tolist()
    [0, 1, 0]
    """

    def __init__(
        self, capacity_keys: int, *, false_positive: float = 1e-6, ttl: int | None = None
    ) -> None:
        if isinstance(capacity_keys, bool) or not isinstance(capacity_keys, int | np.integer):
            raise ConfigError(f"bloom store: capacity must be an integer, got {capacity_keys!r}")
        if capacity_keys <= 0:
            raise ConfigError(f"bloom store: capacity must be positive, got {capacity_keys!r}")
        if not (isinstance(false_positive, float | int) and 0 < false_positive < 0.5):
            raise ConfigError(f"bloom store: fp must be in (0, 0.5), got {false_positive!r}")
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | np.integer) or ttl < 2
        ):
            raise ConfigError(f"bloom store: ttl must be an integer >= 2, got {ttl!r}")
        self.capacity_keys = int(capacity_keys)
        self.false_positive = float(false_positive)
        self.ttl = None if ttl is None else int(ttl)
        self.period = None if ttl is None else int(ttl) // 2
        generations = 1 if ttl is None else 2
        # each generation gets its share so that "in either" stays at the target
        per_generation = 1.0 - (1.0 - self.false_positive) ** (1.0 / generations)
        self.k, self.bits_per_key = design(per_generation)
        self.blocks = max(1, math.ceil(self.capacity_keys * self.bits_per_key / BLOCK_BITS))
        if self.blocks >= 1 << 32:
            raise ConfigError(
                f"bloom store: capacity={capacity_keys!r} at fp={false_positive!r} needs "
                f"{self.blocks * 64} bytes, beyond this store's 2^32 blocks"
            )
        self._words_needed = -(-self.k // _PER_WORD)
        self._clock: int | None = None
        self._gen: int | None = None  # period of the current generation
        self._filters: list[NDArray[np.uint64]] = []
        self._held: list[int] = []
        self._ones: list[int] = []
        try:
            self.clear()
        except MemoryError:
            raise ConfigError(
                f"bloom store: capacity={capacity_keys!r} at fp={false_positive!r} needs "
                f"{generations * self.blocks * 64:,} bytes, more than this machine can give"
            ) from None

    # -- state ------------------------------------------------------------------
    def clear(self) -> None:
        """Forget everything (fresh, lazily zeroed filters)."""
        n = 1 if self.ttl is None else 2
        # index 0 is current, 1 previous; np.zeros pages in only what is touched
        self._filters = [np.zeros(self.blocks * _WORDS, dtype=np.uint64) for _ in range(n)]
        self._held = [0] * n
        self._ones = [0] * n
        self._gen = None
        self._clock = None

    def _advance(self, t: int) -> None:
        """Rotate the generations so that the period of time ``t`` is current."""
        if self.period is None:
            return
        self._clock = t if self._clock is None else max(self._clock, t)
        g = t // self.period
        if self._gen is None:
            self._gen = g
            return
        if g <= self._gen:
            return
        if g == self._gen + 1:
            self._filters = [np.zeros_like(self._filters[0]), self._filters[0]]
            self._held, self._ones = [0, self._held[0]], [0, self._ones[0]]
        else:
            self._filters = [np.zeros_like(self._filters[0]) for _ in range(2)]
            self._held, self._ones = [0, 0], [0, 0]
        self._gen = g

    def __len__(self) -> int:
        return sum(self._held)

    @property
    def nbytes(self) -> int:
        """Memory of the filters (every generation, allocated size), in bytes."""
        return sum(int(f.nbytes) for f in self._filters)

    def expected_false_positive(self) -> float:
        """Rate at which a fresh key is reported seen now, from the filters' fill.

        Each generation's share ``X / m`` of set bits gives its key count (in
        expectation ``X / m = 1 - exp(-lam * (1 - (1 - 1/512)^k))``, ``lam`` keys a
        block), then the blocked formula its rate; generations combine as "in either".
        """
        m = self.blocks * BLOCK_BITS
        miss = 1.0
        per_key = 1.0 - (1.0 - 1.0 / BLOCK_BITS) ** self.k
        for ones in self._ones:
            if ones == 0:
                continue
            if ones >= m:
                return 1.0
            lam = -math.log1p(-ones / m) / per_key  # keys per block
            miss *= 1.0 - blocked_false_positive(BLOCK_BITS / lam, self.k)
        return 1.0 - miss

    @property
    def design_false_positive(self) -> float:
        """The rate at ``capacity_keys`` keys in every generation (at most ``false_positive``)."""
        bits = self.blocks * BLOCK_BITS / self.capacity_keys
        one = blocked_false_positive(bits, self.k)
        return 1.0 - (1.0 - one) ** len(self._filters)

    @property
    def saturated(self) -> bool:
        """True when a live generation holds more than ``capacity_keys`` keys, so the
        false-positive rate is above the design (see :meth:`expected_false_positive`)."""
        return max(self._held) > self.capacity_keys

    # -- hashing -----------------------------------------------------------------
    def _hash(
        self, keys: NDArray[np.uint64]
    ) -> tuple[NDArray[np.uint64], NDArray[np.intp], NDArray[np.uint64]]:
        """Each key's remix ``h0``, its block (nondecreasing in ``h0``) and its 8-word
        bit mask ``(n, 8)``."""
        h0 = _mix(keys)
        # multiply-shift range reduction of the top 32 bits: no modulo, any block count
        block = (((h0 >> np.uint64(32)) * np.uint64(self.blocks)) >> np.uint64(32)).astype(np.intp)
        n = len(keys)
        masks = np.zeros(n * _WORDS, dtype=np.uint64)
        base = np.arange(0, n * _WORDS, _WORDS, dtype=np.intp)
        one, nine, low9, low6 = np.uint64(1), np.uint64(_POS_BITS), np.uint64(511), np.uint64(63)
        left = self.k
        for j in range(1, self._words_needed + 1):
            w = _mix(keys + np.uint64((j * _GOLDEN) & _M64))
            for _ in range(min(_PER_WORD, left)):
                pos = w & low9
                w = w >> nine
                where = base + (pos >> np.uint64(6)).astype(np.intp)
                # one position per key per step: the indexes are distinct, |= loses nothing
                masks[where] |= one << (pos & low6)
            left -= _PER_WORD
        return h0, block, masks.reshape(n, _WORDS)

    def _hash_one(self, key: int) -> tuple[int, dict[int, int]]:
        """:meth:`_hash` of one key in plain Python: (block, {word: mask})."""
        h0 = _mix_int(key)
        block = ((h0 >> 32) * self.blocks) >> 32
        words: dict[int, int] = {}
        left = self.k
        for j in range(1, self._words_needed + 1):
            w = _mix_int((key + j * _GOLDEN) & _M64)
            for _ in range(min(_PER_WORD, left)):
                pos = w & 511
                w >>= _POS_BITS
                words[pos >> 6] = words.get(pos >> 6, 0) | (1 << (pos & 63))
            left -= _PER_WORD
        return block, words

    # -- the Store interface -------------------------------------------------------
    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        """1 where a key is (probably) in a live generation, else 0; records nothing."""
        keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        if len(keys) <= _SMALL_BATCH:
            return np.array([self._contains_one(k) for k in keys.tolist()], dtype=np.int64)
        out = np.zeros(len(keys), dtype=np.int64)
        for start in range(0, len(keys), _CHUNK):
            _, block, masks = self._hash(keys[start : start + _CHUNK])
            out[start : start + _CHUNK] = self._contains(block, masks, self._filters)
        return out

    def _contains_one(self, key: int) -> bool:
        # the plain-Python twin of _contains for one key
        block, words = self._hash_one(key)
        base = block * _WORDS
        return any(all(f.item(base + w) & m == m for w, m in words.items()) for f in self._filters)

    @staticmethod
    def _contains(
        block: NDArray[np.intp], masks: NDArray[np.uint64], filters: list[NDArray[np.uint64]]
    ) -> NDArray[np.bool_]:
        """True where every bit of a key's mask is set in its block of one of ``filters``."""
        hit = np.zeros(len(block), dtype=bool)
        for f in filters:
            words = f.reshape(-1, _WORDS)[block]  # one cache line per key
            hit |= ((words & masks) == masks).all(axis=1)
        return hit

    def observe(self, keys: NDArray[np.uint64], now: NDArray[np.int64]) -> NDArray[np.int64]:
        """Record ``keys`` at times ``now``; 1 where a key was (probably) seen before."""
        keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        now = np.broadcast_to(np.asarray(now, dtype=np.int64), keys.shape)
        if len(keys) == 0:
            return np.zeros(0, dtype=np.int64)
        if len(keys) <= _SMALL_BATCH:
            return self._observe_small(keys.tolist(), now.tolist())
        out = np.empty(len(keys), dtype=np.int64)
        # runs of one period go together; a rotation happens between runs
        cuts: list[int] = []
        if self.period is not None:
            period = now // self.period
            cuts = (np.flatnonzero(period[1:] != period[:-1]) + 1).tolist()
        bounds = [0, *cuts, len(keys)]
        for lo, hi in itertools.pairwise(bounds):
            if self.period is not None:
                self._advance(int(now[lo:hi].max()))
            # chunks go in order: a key repeated in a later chunk finds the earlier
            # chunk's bits, so the whole batch reads as sequential
            for start in range(lo, hi, _CHUNK):
                stop = min(start + _CHUNK, hi)
                out[start:stop] = self._observe_chunk(keys[start:stop])
        return out

    def _observe_chunk(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        h0, block, masks = self._hash(keys)
        cur = self._filters[0].reshape(-1, _WORDS)
        in_current = self._contains(block, masks, self._filters[:1])
        seen = in_current | self._contains(block, masks, self._filters[1:])
        # one sort by h0 does two jobs: equal keys (equal h0, mix is a bijection) end up
        # side by side, earlier arrival first; and the block, monotone in h0, groups
        # the word updates of one block for reduceat
        order = np.argsort(h0, kind="stable")
        ranked = h0[order]
        repeat = np.zeros(len(keys), dtype=bool)
        later = ranked[1:] == ranked[:-1]
        if later.any():
            repeat[order[1:][later]] = True
        self._held[0] += int(np.count_nonzero(~in_current & ~repeat))
        by_block = block[order]
        starts = np.flatnonzero(np.r_[True, by_block[1:] != by_block[:-1]])
        merged = np.bitwise_or.reduceat(masks[order], starts, axis=0)
        targets = by_block[starts]
        old = cur[targets]
        self._ones[0] += int(np.bitwise_count(merged & ~old).sum())
        cur[targets] = old | merged
        return (seen | repeat).astype(np.int64)

    def _observe_small(self, keys: list[int], now: list[int]) -> NDArray[np.int64]:
        # a plain loop beats numpy's per-call cost for a few keys; the same bits
        out = []
        for key, t in zip(keys, now, strict=True):
            if self.period is not None:
                self._advance(t)
            block, words = self._hash_one(key)
            base = block * _WORDS
            cur = self._filters[0]
            in_current = all(cur.item(base + w) & m == m for w, m in words.items())
            seen = in_current or any(
                all(f.item(base + w) & m == m for w, m in words.items()) for f in self._filters[1:]
            )
            if not in_current:
                self._held[0] += 1
                for w, m in words.items():
                    old = cur.item(base + w)
                    self._ones[0] += (m & ~old).bit_count()
                    cur[base + w] = old | m
            out.append(int(seen))
        return np.array(out, dtype=np.int64)

    def describe(self) -> str:
        """Parameters as text."""
        ttl = "" if self.ttl is None else f", ttl={self.ttl}"
        return (
            f"bloom(capacity={self.capacity_keys}, fp={self.false_positive:g}, k={self.k}, "
            f"{self.bits_per_key:.1f} bits/key{ttl})"
        )
