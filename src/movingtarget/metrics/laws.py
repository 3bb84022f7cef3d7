"""Exact laws of ``r~`` for the attackers the arena runs, drawing without replacement.

The paper's closed forms assume i.i.d. draws (the first mistake after ``E[T] = 1/r``
queries). The arena's attackers explore a finite pool in a seeded permutation, so the
first mistake among ``n`` inputs of which ``K`` are mistakes comes after
``E[T] = (n + 1) / (K + 1)`` queries, and a memorizing defense stops paying out once
the pool is used up. Each law below gives the mean, the variance (of one run's
``r~``) and the expected cumulative curve, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import hypergeom

from movingtarget.errors import ConfigError


def _check(n: int, k: int) -> None:
    if n < 0 or not 0 <= k <= n:
        raise ConfigError(f"a pool of n = {n} inputs cannot hold K = {k} mistakes")


@dataclass(frozen=True)
class FirstMistake:
    """The test set attack on a deterministic defense: explore a random permutation of
    ``n`` inputs (``k`` of them answered as the attacker wants) one at a time, then
    repeat the first success ``T`` for the rest of the ``m`` queries:
    ``r~ = (m - T + 1)+ / m``.

    Examples
    --------
    >>> law = FirstMistake(n=450, k=9)
    >>> round(law.expected_first(), 2)        # (n + 1) / (k + 1)
    45.1
    >>> round(law.mean(400), 4), round(law.iid_mean(400), 4)
    (0.8898, 0.8775)
    """

    n: int
    k: int

    def __post_init__(self) -> None:
        _check(self.n, self.k)

    def expected_first(self) -> float:
        """``E[T] = (n + 1) / (k + 1)`` (infinite when ``k = 0``)."""
        return (self.n + 1) / (self.k + 1) if self.k else float("inf")

    def survival(self, t_max: int) -> NDArray[np.float64]:
        """``P(T > t)`` for ``t = 0..t_max``: no success among the first ``t`` inputs."""
        t = np.arange(t_max + 1)
        out = np.zeros(t_max + 1)
        if self.k == 0:
            return np.ones(t_max + 1)
        free = self.n - self.k  # inputs that are not successes: T <= free + 1
        j = np.arange(min(t_max, free))
        factors = (free - j) / (self.n - j)
        out[0] = 1.0
        out[1 : len(j) + 1] = np.cumprod(factors)
        out[t > free] = 0.0
        return out

    def curve(self, ts: NDArray[np.integer] | list[int]) -> NDArray[np.float64]:
        """Expected cumulative ``r~`` after ``t`` queries: ``(1/t) sum_{s<=t} P(T <= s)``."""
        ts = np.asarray(ts, dtype=np.int64)
        if len(ts) == 0:
            return np.zeros(0)
        hit = 1.0 - self.survival(int(ts.max()))
        cum = np.cumsum(hit[1:])  # cum[t-1] = sum_{s=1}^{t} P(T <= s)
        return cum[ts - 1] / ts

    def mean(self, m: int) -> float:
        """``E[r~]`` after ``m`` queries."""
        return float(self.curve([m])[0])

    def variance(self, m: int) -> float:
        """``Var[r~]`` of one run of ``m`` queries."""
        if self.k == 0:
            return 0.0
        s = self.survival(self.n - self.k + 1)
        t = np.arange(1, len(s))
        pmf = s[:-1] - s[1:]  # P(T = t)
        x = np.clip(m - t + 1, 0, None) / m
        mu = float((pmf * x).sum())
        return max(float((pmf * x * x).sum()) - mu * mu, 0.0)

    def iid_mean(self, m: int) -> float:
        """The paper's formula, ``(m - 1/r + 1) / m`` with ``r = k / n`` (i.i.d. draws)."""
        if self.k == 0 or self.n == 0:
            return 0.0
        return max(0.0, (m - self.n / self.k + 1.0) / m)


@dataclass(frozen=True)
class FreshOnly:
    """Exact memorization that abstains on repeats, against the test set attack: each
    fresh input is a success with its deterministic answer, and each success is followed
    by ``patience`` refused repeats before the attacker explores again, so a success
    costs ``1 + patience`` queries. When the pool runs out (``n + patience * k <= m``)
    ``r~ = k / m`` exactly; while it lasts, ``r~ ~ r / (1 + patience * r)``.

    Examples
    --------
    >>> round(FreshOnly(n=20_000, k=400).mean(10_000), 4)   # r = 0.02: r / (1 + r)
    0.0196
    >>> FreshOnly(n=450, k=25).mean(10_000), FreshOnly(n=450, k=25).variance(10_000)
    (0.0025, 0.0)
    """

    n: int
    k: int
    patience: int = 1

    def __post_init__(self) -> None:
        _check(self.n, self.k)

    def _tail(self, m: int) -> NDArray[np.float64]:
        """``P(W >= w)`` for ``w = 1..k``: the ``w``-th success is sent by query ``m``."""
        if self.k == 0:
            return np.zeros(0)
        w = np.arange(1, self.k + 1)
        # fresh inputs drawn before query m, when w - 1 successes came before
        s = np.minimum(self.n, m - self.patience * (w - 1))
        p = hypergeom.sf(w - 1, self.n, self.k, np.maximum(s, 0))
        return np.where(s >= w, p, 0.0)

    def mean(self, m: int) -> float:
        """``E[r~]`` after ``m`` queries."""
        return float(self._tail(m).sum()) / m

    def variance(self, m: int) -> float:
        """``Var[r~]`` of one run of ``m`` queries."""
        tail = self._tail(m)
        w = np.arange(1, len(tail) + 1)
        mu = float(tail.sum())
        return max(float(((2 * w - 1) * tail).sum()) - mu * mu, 0.0) / (m * m)

    def curve(self, ts: NDArray[np.integer] | list[int]) -> NDArray[np.float64]:
        """Expected cumulative ``r~`` after each ``t`` queries."""
        return np.array([self.mean(int(t)) for t in np.asarray(ts)], dtype=np.float64)

    def runs_out(self, m: int) -> bool:
        """Whether every fresh input is sent within ``m`` queries whatever the order."""
        return self.n + self.patience * self.k <= m

    def iid_mean(self, m: int) -> float:
        """The paper's regime (an endless pool): ``r / (1 + patience r)``, ``r = k / n``."""
        r = self.k / self.n if self.n else 0.0
        return r / (1.0 + self.patience * r)
