"""The test set attack: send ordinary examples until one is misclassified, then
repeat that mistake for the rest of the deployment."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from movingtarget._passes import Passes
from movingtarget.attacks.base import PoolAdversary, Proposal
from movingtarget.errors import ConfigError


class TestSetAttack(PoolAdversary):
    """Explore the pool in a seeded order; exploit the first mistake by repeating it.

    While exploring it sends one query at a time (it stops at the first mistake).
    While exploiting it commits to runs of repeats that double (1, 2, 4, ... up to
    ``max_commit``) as long as every answer stays a mistake; after ``patience``
    failed repeats in a row it drops the input and explores again. Against a fixed
    deterministic model this is exactly the one-at-a-time attacker (repeats never
    change answer); against a memorizing defense the first repeat is a run of one.

    Parameters
    ----------
    target:
        None for untargeted (any wrong class), or the class the attacker wants.
    patience:
        Consecutive failed repeats tolerated before dropping the input.

    Examples
    --------
    >>> import numpy as np
    >>> a = TestSetAttack(np.eye(3, dtype=np.float32), np.array([0, 1, 2]), 3, seed=0)
    >>> p = a.propose(10); len(p)
    1
    >>> a.observe(np.array([2 if p.y_true[0] != 2 else 0]))  # a mistake
    >>> a.propose(10).source.tolist() == p.source.tolist()     # repeated
    True
    """

    name = "test-set"
    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        pool_x: NDArray[np.float32],
        pool_y: NDArray[np.int64],
        n_classes: int,
        *,
        seed: int = 0,
        target: int | None = None,
        patience: int = 1,
        max_commit: int = 1024,
    ) -> None:
        super().__init__(pool_x, pool_y, n_classes, seed=seed, target=target, max_commit=max_commit)
        if patience < 1:
            raise ConfigError(f"{self.name}: patience must be >= 1, got {patience}")
        self.patience = int(patience)
        self._passes = Passes(len(self.pool_y), self.rng)
        self._item = -1  # the mistake being exploited, -1 while exploring
        self._commit = 1
        self._failures = 0

    def _exploit_queries(self, idx: NDArray[np.int64]) -> NDArray[np.float32] | None:
        """The inputs sent when repeating ``idx`` (None: the pool inputs unchanged)."""
        return None

    def propose(self, limit: int, exactly: bool = False) -> Proposal:
        if self._item < 0:
            idx = self._passes.take(limit if exactly else 1)
            return self._proposal(idx)
        n = limit if exactly else min(limit, self._commit)
        idx = np.full(n, self._item, dtype=np.int64)
        x = self._exploit_queries(idx)
        return self._proposal(idx, x, noisy=x is not None)

    def observe(self, labels: NDArray[np.int64]) -> None:
        assert self._last is not None
        wins = self._wins(labels)
        if self._item < 0:
            if wins.any():
                self._item = int(self._last.source[int(np.argmax(wins))])
                self._commit, self._failures = 1, 0
            return
        if wins.all():
            self._failures = 0
            self._commit = min(self._commit * 2, self.max_commit)
            return
        # trailing failures decide whether the input is still worth repeating
        tail = len(wins) - 1 - int(np.flatnonzero(wins)[-1]) if wins.any() else len(wins)
        self._failures = tail if wins.any() else self._failures + tail
        self._commit = 1
        if self._failures >= self.patience:
            self._item = -1


class TargetedTestSetAttack(TestSetAttack):
    """The test set attack toward one class (``target``, default 0).

    Examples
    --------
    >>> import numpy as np
    >>> TargetedTestSetAttack(np.eye(3, dtype=np.float32), np.arange(3), 3, target=2).target
    2
    """

    name = "test-set-targeted"

    def __init__(
        self,
        pool_x: NDArray[np.float32],
        pool_y: NDArray[np.int64],
        n_classes: int,
        *,
        seed: int = 0,
        target: int = 0,
        patience: int = 1,
        max_commit: int = 1024,
    ) -> None:
        super().__init__(
            pool_x,
            pool_y,
            n_classes,
            seed=seed,
            target=target,
            patience=patience,
            max_commit=max_commit,
        )
        # inputs already of the target class cannot be a targeted mistake
        keep = np.flatnonzero(self.pool_y != self.target)
        if len(keep) == 0:
            raise ConfigError(f"{self.name}: the pool holds only class {target}")
        self.pool_x, self.pool_y = self.pool_x[keep], self.pool_y[keep]
        self._passes = Passes(len(self.pool_y), self.rng)


class NoisyRepeatAttack(TestSetAttack):
    """The test set attack whose repeats carry fresh small noise, to evade exact matching.

    Parameters
    ----------
    eps:
        Noise size: the L-infinity bound (``norm="linf"``, uniform noise) or the L2
        length (``norm="l2"``, a random direction), in input units.
    clip:
        Keep queries inside the pool's value range (True by default).
    transform:
        Optionally also transform each repeat before the noise (a name from
        :data:`movingtarget.arena.transforms.TRANSFORMS`: ``shift``, ``brightness``, ...).

    Examples
    --------
    >>> import numpy as np
    >>> NoisyRepeatAttack(np.eye(3, dtype=np.float32), np.arange(3), 3, eps=0.01).eps
    0.01
    """

    name = "noisy-repeat"

    def __init__(
        self,
        pool_x: NDArray[np.float32],
        pool_y: NDArray[np.int64],
        n_classes: int,
        *,
        seed: int = 0,
        target: int | None = None,
        eps: float = 2 / 255,
        norm: str = "linf",
        clip: bool = True,
        transform: str | None = None,
        patience: int = 1,
        max_commit: int = 1024,
    ) -> None:
        super().__init__(
            pool_x,
            pool_y,
            n_classes,
            seed=seed,
            target=target,
            patience=patience,
            max_commit=max_commit,
        )
        if transform is not None:
            from movingtarget.arena.transforms import check_transforms

            check_transforms([transform], f"{self.name}.transform")
        self.transform = transform
        if not eps > 0:
            raise ConfigError(f"{self.name}: eps must be > 0, got {eps}")
        if norm not in ("linf", "l2"):
            raise ConfigError(f"{self.name}: norm must be 'linf' or 'l2', got {norm!r}")
        self.eps, self.norm, self.clip = float(eps), norm, bool(clip)
        self._lo, self._hi = float(self.pool_x.min()), float(self.pool_x.max())

    def _exploit_queries(self, idx: NDArray[np.int64]) -> NDArray[np.float32] | None:
        base = self.pool_x[idx]
        if self.transform is not None:
            from movingtarget.arena.transforms import TRANSFORMS

            base = TRANSFORMS[self.transform](base, self.rng, self._lo, self._hi)
        if self.norm == "linf":
            noise = self.rng.uniform(-self.eps, self.eps, size=base.shape)
        else:
            noise = self.rng.standard_normal(base.shape)
            flat = noise.reshape(len(noise), -1)
            flat *= self.eps / np.linalg.norm(flat, axis=1, keepdims=True)
        out = base + noise.astype(np.float32)
        if self.clip:
            out = np.clip(out, self._lo, self._hi)
        return out.astype(np.float32)
