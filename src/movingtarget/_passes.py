"""Seeded passes over a pool: what benign users and exploring adversaries draw from."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class Passes:
    """Indices ``0..size-1`` in seeded passes: each pass is a new permutation, so every
    index comes once per pass and none twice before the pool is used up.

    Examples
    --------
    >>> passes = Passes(3, np.random.default_rng(0))
    >>> first = passes.take(3); sorted(first.tolist())
    [0, 1, 2]
    >>> len(passes.take(4))                     # a second pass, then into a third
    4
    """

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng = int(size), rng
        self._order = rng.permutation(self.size)
        self._cursor = 0

    def take(self, n: int) -> NDArray[np.int64]:
        """The next ``n`` indices (a new pass begins when one is used up)."""
        out = []
        while n > 0:
            if self._cursor == self.size:
                self._order = self.rng.permutation(self.size)
                self._cursor = 0
            step = self._order[self._cursor : self._cursor + n]
            self._cursor += len(step)
            out.append(step)
            n -= len(step)
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)
