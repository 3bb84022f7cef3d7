"""Per-key limits: a token bucket (rate, burst) and a fixed-window quota.

The arithmetic lives here once, in Python for the SQLite store; the Redis store runs
the same steps in one Lua script (``keys_redis._AUTHORIZE``) so replicas sharing a
Redis are limited together, atomically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from movingtarget.gateway.access.base import KeyLimits
from movingtarget.gateway.problems import Problem


@dataclass(frozen=True)
class BucketState:
    """What the store keeps per key: bucket level at ``updated``, quota window and use.

    Examples
    --------
    >>> BucketState.full(KeyLimits(rate=1, burst=5).check()).tokens
    5.0
    """

    tokens: float
    updated: float
    window: int
    used: int

    @classmethod
    def full(cls, limits: KeyLimits, now: float = 0.0) -> BucketState:
        """A new key's state: a full bucket, nothing used."""
        return cls(limits.burst, now, 0, 0)


@dataclass(frozen=True)
class Decision:
    """The outcome of charging ``cost`` queries: allowed (with the new state) or the
    seconds to wait and which limit refused."""

    allowed: bool
    state: BucketState
    retry_after: float = 0.0
    limit: str = ""  # "rate" or "quota" when refused


def charge(limits: KeyLimits, state: BucketState, cost: int, now: float) -> Decision:
    """Charge ``cost`` queries at time ``now`` (seconds): quota first, then the bucket.

    Nothing is charged unless both allow it.

    Examples
    --------
    >>> lim = KeyLimits(rate=1, burst=2)
    >>> s = BucketState.full(lim)
    >>> d = charge(lim, s, 2, 0.0); d.allowed
    True
    >>> d = charge(lim, d.state, 1, 0.5); d.allowed, d.retry_after, d.limit
    (False, 0.5, 'rate')
    """
    window, used = state.window, state.used
    if limits.quota is not None:
        current = int(now // limits.quota_window)
        if current != window:
            window, used = current, 0
        if used + cost > limits.quota:
            wait = (current + 1) * limits.quota_window - now
            return Decision(False, state, wait, "quota")
    tokens = state.tokens
    if limits.rate > 0:
        tokens = min(limits.burst, tokens + max(now - state.updated, 0.0) * limits.rate)
        if tokens < cost:
            return Decision(False, state, (cost - tokens) / limits.rate, "rate")
        tokens -= cost
    return Decision(True, BucketState(tokens, now, window, used + cost))


def never_fits(limits: KeyLimits, cost: int) -> str:
    """Which limit a request of ``cost`` queries can never pass however long it waits
    (``"burst"`` or ``"quota"``), or ``""``: such a request gets 413, not a 429 that a
    client honouring ``Retry-After`` would retry forever.

    >>> never_fits(KeyLimits(rate=1, burst=10), 11), never_fits(KeyLimits(rate=1, burst=10), 10)
    ('burst', '')
    >>> never_fits(KeyLimits(rate=0, quota=5), 6)
    'quota'
    """
    if limits.quota is not None and cost > limits.quota:
        return "quota"
    if limits.rate > 0 and cost > limits.burst:
        return "burst"
    return ""


def too_large(name: str, limit: str, size: float, cost: int) -> Problem:
    """413 for a request of ``cost`` queries larger than key ``name``'s ``limit``
    (``burst`` or ``quota``) of ``size`` queries: no wait lets it through."""
    return Problem(
        413,
        f"over-{limit}",
        f"a request of {cost} queries can never fit key {name!r}'s {limit} of "
        f"{size:g} queries; send at most {size:g} per request",
        key=name,
    )


def retry_after_header(seconds: float) -> int:
    """Seconds for a ``Retry-After`` header: whole seconds, at least 1, rounded up."""
    return max(1, math.ceil(seconds - 1e-9))


def over_limit(name: str, limit: str, seconds: float) -> Problem:
    """429 for key ``name`` over its ``limit`` (``rate`` or ``quota``), free again in
    ``seconds``."""
    return Problem(
        429,
        f"{limit}-limited",
        f"key {name!r} is over its {limit} limit; retry later",
        retry_after=retry_after_header(seconds),
        key=name,
    )
