"""A tiny movingtarget plugin: an attack, a mechanism and a named defense.

Nothing here is registered by import: the entry points in ``pyproject.toml`` name these
objects, and movingtarget's registries load them at first use.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN, Reason
from movingtarget.attacks.base import PoolAdversary, Proposal
from movingtarget.defenses.base import Context
from movingtarget.errors import ConfigError

__all__ = ["MARGIN_ABSTAIN", "LowMargin", "RepeatOneAttack"]

#: A named composition (the ``movingtarget.defenses`` group takes composition texts).
MARGIN_ABSTAIN = "argmax > example-low-margin(margin=0.2)"


class RepeatOneAttack(PoolAdversary):
    """Send one seeded input of the pool, again and again: the laziest correlated attack.

    Against a fixed model every answer is the same, so ``r~`` is 0 or 1; against exact
    memorization only the first query is answered.

    >>> x = np.eye(3, dtype=np.float32); y = np.arange(3)
    >>> attack = RepeatOneAttack(x, y, 3, seed=0)
    >>> p = attack.propose(4, exactly=True)
    >>> len(set(p.source.tolist()))
    1
    """

    name = "example-repeat-one"

    def __init__(
        self,
        pool_x: NDArray[np.float32],
        pool_y: NDArray[np.int64],
        n_classes: int,
        *,
        seed: int = 0,
    ) -> None:
        super().__init__(pool_x, pool_y, n_classes, seed=seed)
        self._item = int(self.rng.integers(len(self.pool_y)))

    def propose(self, limit: int, exactly: bool = False) -> Proposal:
        return self._proposal(np.full(limit if exactly else 1, self._item, dtype=np.int64))

    def observe(self, labels: NDArray[np.int64]) -> None:
        self._wins(labels)  # checks one answer per query; the attack never adapts


class LowMargin:
    """A filter: ABSTAIN (``low-confidence``) on model answers whose top two classes are
    closer than ``margin`` in probability.

    >>> LowMargin(0.2).describe()
    'example-low-margin(margin=0.2)'
    """

    role = "filter"

    def __init__(self, margin: float = 0.1) -> None:
        if not 0.0 <= margin <= 1.0:
            raise ConfigError(f"example-low-margin: margin must be in [0, 1], got {margin}")
        self.margin = float(margin)

    def __call__(self, ctx: Context) -> None:
        top2 = np.sort(ctx.proba, axis=1)[:, -2:]
        close = (ctx.answers.reasons == Reason.MODEL) & (top2[:, 1] - top2[:, 0] < self.margin)
        ctx.answers.labels[close] = ABSTAIN
        ctx.answers.reasons[close] = Reason.LOW_CONFIDENCE

    def reset(self) -> None:
        """Stateless."""

    def describe(self) -> str:
        return f"example-low-margin(margin={self.margin:g})"
