"""The rate-tracking attack: against a stochastic model, track each input's error
rate and repeat the worst one (a multi-armed bandit over the pool)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from movingtarget.attacks.base import PoolAdversary, Proposal
from movingtarget.errors import ConfigError


class RateTrackingAttack(PoolAdversary):
    """A bandit over ``arms`` pool inputs: each query pulls an arm, a mistake is a reward.

    Every arm is pulled once (sent in batches: the sweep does not depend on answers),
    then the next arm is chosen by Thompson sampling from Beta posteriors
    (``policy="thompson"``, the default) or by the upper confidence bound
    ``mean + sqrt(c * ln t / n)`` (``policy="ucb"``, UCB1 with ``exploration = c``).
    The chosen arm is pulled in runs of ``n // 4`` (at most ``max_commit``), so a
    well-estimated arm is exploited cheaply. Against a fixed stochastic model its late
    error approaches the best per-input error rate. (UCB1's guarantees cost about
    ``8 ln m / gap^2`` pulls per arm, too many for hundreds of arms in 10,000 queries;
    Thompson sampling concentrates much sooner.)

    Examples
    --------
    >>> import numpy as np
    >>> a = RateTrackingAttack(np.eye(4, dtype=np.float32), np.arange(4), 4, arms=4)
    >>> len(a.propose(100))   # the sweep: every arm once
    4
    """

    name = "rate-tracking"

    def __init__(
        self,
        pool_x: NDArray[np.float32],
        pool_y: NDArray[np.int64],
        n_classes: int,
        *,
        seed: int = 0,
        target: int | None = None,
        arms: int = 200,
        policy: str = "thompson",
        exploration: float = 2.0,
        max_commit: int = 256,
    ) -> None:
        super().__init__(pool_x, pool_y, n_classes, seed=seed, target=target, max_commit=max_commit)
        if arms < 1:
            raise ConfigError(f"{self.name}: arms must be >= 1, got {arms}")
        if policy not in ("thompson", "ucb"):
            raise ConfigError(f"{self.name}: policy must be 'thompson' or 'ucb', got {policy!r}")
        self.policy = policy
        if exploration < 0:
            raise ConfigError(f"{self.name}: exploration must be >= 0, got {exploration}")
        self.arms = self.rng.choice(
            len(self.pool_y), size=min(arms, len(self.pool_y)), replace=False
        )
        self.exploration = float(exploration)
        self.pulls = np.zeros(len(self.arms), dtype=np.int64)
        self.wins = np.zeros(len(self.arms), dtype=np.int64)
        self._swept = 0
        self._last_arms = np.zeros(0, dtype=np.int64)

    def _choose(self) -> int:
        if self.policy == "thompson":
            theta = self.rng.beta(1 + self.wins, 1 + self.pulls - self.wins)
            return int(np.argmax(theta))
        t = max(int(self.pulls.sum()), 1)
        mean = self.wins / self.pulls
        bonus = np.sqrt(self.exploration * np.log(t) / self.pulls)
        return int(np.argmax(mean + bonus))

    def propose(self, limit: int, exactly: bool = False) -> Proposal:
        if self._swept < len(self.arms):
            n = min(limit, len(self.arms) - self._swept)
            arms = np.arange(self._swept, self._swept + n)
            self._swept += n
            if exactly and n < limit:
                arms = np.concatenate([arms, np.full(limit - n, self._choose_safe(), np.int64)])
        else:
            best = self._choose()
            run = int(np.clip(self.pulls[best] // 4, 1, min(limit, self.max_commit)))
            n = limit if exactly else run
            arms = np.full(n, best, dtype=np.int64)
        self._last_arms = arms
        return self._proposal(self.arms[arms])

    def _choose_safe(self) -> int:
        pulled = self.pulls > 0
        return self._choose() if pulled.all() else int(np.flatnonzero(~pulled)[0])

    def observe(self, labels: NDArray[np.int64]) -> None:
        wins = self._wins(labels)
        np.add.at(self.pulls, self._last_arms, 1)
        np.add.at(self.wins, self._last_arms, wins.astype(np.int64))

    def best_rate(self) -> float:
        """The highest observed per-arm mistake rate (among arms pulled)."""
        pulled = self.pulls > 0
        return float((self.wins[pulled] / self.pulls[pulled]).max()) if pulled.any() else 0.0
