"""Per-client rate limits: how fast any one client may probe."""

from __future__ import annotations

import numpy as np

from movingtarget.answers import ABSTAIN, Reason
from movingtarget.defenses.base import Context
from movingtarget.errors import ConfigError
from movingtarget.memory import occurrences_before


class RateLimit:
    """Gate: each client gets at most ``max_queries`` answers per ``window`` time units.

    Time is the arrival index of queries (the arena's clock), so limits are exact and
    reproducible. Queries past the limit get ABSTAIN with reason ``rate-limited``.

    Examples
    --------
    >>> RateLimit(100, window=1000).describe()
    'rate-limit(max_queries=100, window=1000)'
    """

    role = "gate"

    def __init__(self, max_queries: int, window: int = 1000) -> None:
        if max_queries < 1 or window < 1:
            raise ConfigError(
                f"rate-limit: max_queries and window must be >= 1, got {max_queries}, {window}"
            )
        self.max_queries = int(max_queries)
        self.window = int(window)
        self._used: dict[int, int] = {}

    def __call__(self, ctx: Context) -> None:
        windows = ctx.times // self.window
        # one key per (client, window), then a running count in arrival order
        keys = (ctx.clients.astype(np.uint64) << np.uint64(32)) ^ windows.astype(np.uint64)
        before = occurrences_before(keys)
        uniq, inverse = np.unique(keys, return_inverse=True)
        used = np.array([self._used.get(int(k), 0) for k in uniq.tolist()], dtype=np.int64)
        count = used[inverse] + before
        over = count >= self.max_queries
        np.add.at(used, inverse, 1)
        current = int(windows.max())
        # keep only the current window's counts: older windows can never limit again
        kept = {k: v for k, v in self._used.items() if (k & 0xFFFFFFFF) >= current}
        kept.update(
            (int(k), int(u))
            for k, u in zip(uniq.tolist(), used.tolist(), strict=True)
            if (int(k) & 0xFFFFFFFF) >= current
        )
        self._used = kept
        over &= ctx.answers.undecided_mask
        ctx.answers.labels[over] = ABSTAIN
        ctx.answers.reasons[over] = Reason.RATE_LIMITED

    def reset(self) -> None:
        """Forget all counts."""
        self._used.clear()

    def describe(self) -> str:
        return f"rate-limit(max_queries={self.max_queries}, window={self.window})"
