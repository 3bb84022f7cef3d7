"""The perturbation-boosted test set attack: perturb pool inputs so the first mistake
comes sooner than by natural sampling (about ``1/r`` queries), then exploit it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget._passes import Passes
from movingtarget.attacks.base import PoolAdversary, Proposal
from movingtarget.attacks.correlated._perturbing import (
    Perturber,
    check_attack,
    check_perturbation,
    uniform_noise,
)
from movingtarget.errors import ConfigError

#: Where the gradients come from.
MODES = ("white-box", "transfer")
#: What the attacker does once it has a mistake.
EXPLOITS = ("repeat", "noisy-repeat", "distinct")


class BoostedTestSetAttack(PoolAdversary):
    """The test set attack whose explored inputs are adversarially perturbed.

    Exploring, it sends pool inputs one at a time in a seeded order (as
    :class:`~movingtarget.attacks.correlated.test_set.TestSetAttack` does), each
    perturbed within ``eps`` by a gradient attack (``fgsm`` or ``pgd``, through the
    project's ART adapters) on

    * ``mode="white-box"``: the deployed model itself (the attack ``needs_model``);
    * ``mode="transfer"``: a surrogate the attacker trains on its own labeled pool with
      :func:`~movingtarget.models.build_model` (``surrogate``, default ``logistic``,
      with ``surrogate_params``); it never sees the deployed model, only answers.

    Perturbations are crafted offline in chunks of ``chunk`` pool inputs as exploring
    reaches them. The query index (1-based) of its first mistake is
    ``first_mistake``; the experiment's metrics report the same for every attack as
    ``queries_to_first_mistake``. Then it exploits, by ``exploit``:

    * ``"repeat"``: repeats the mistaken query exactly, in runs that double while they
      keep winning; after ``patience`` failed repeats in a row it explores again (the
      test set attack's rule);
    * ``"noisy-repeat"``: the same, each repeat with fresh uniform noise of L-infinity
      size ``noise`` (to evade exact memorization);
    * ``"distinct"``: never repeats: it goes on sending fresh perturbed pool inputs, in
      runs that double while they keep winning; after a whole pass over the pool, later
      passes add fresh noise of size ``noise``, so no query is sent twice.

    Parameters
    ----------
    mode:
        ``"white-box"`` or ``"transfer"``.
    model:
        The deployed model (white-box only; passed by
        :func:`~movingtarget.attacks.build_adversary`).
    attack, eps, norm, max_iter:
        The per-input attack (``"fgsm"`` or ``"pgd"``), its size ``eps`` in norm
        ``"inf"`` or ``"2"``, and PGD's steps.
    surrogate, surrogate_params:
        The transfer surrogate's model name and parameters.
    exploit, noise, patience:
        See above.

    Examples
    --------
    >>> from movingtarget.datasets import load_digits
    >>> split = load_digits().split(seed=0)
    >>> a = BoostedTestSetAttack(split.x_test, split.y_test, 10, mode="transfer", eps=0.3)
    >>> p = a.propose(5); len(p), bool(p.noisy[0])   # one perturbed input at a time
    (1, True)
    """

    name = "boosted-test-set"

    @staticmethod
    def needs_model(params: Mapping[str, Any]) -> bool:
        """White-box mode gets the deployed model; transfer mode does not."""
        return bool(params.get("mode", "white-box") == "white-box")

    def __init__(
        self,
        pool_x: NDArray[np.float32],
        pool_y: NDArray[np.int64],
        n_classes: int,
        *,
        seed: int = 0,
        target: int | None = None,
        mode: str = "white-box",
        model: Any = None,
        attack: str = "fgsm",
        eps: float = 0.1,
        norm: str = "inf",
        max_iter: int = 20,
        surrogate: str = "logistic",
        surrogate_params: Mapping[str, Any] | None = None,
        exploit: str = "repeat",
        noise: float = 0.01,
        patience: int = 1,
        chunk: int = 64,
        max_commit: int = 1024,
    ) -> None:
        super().__init__(pool_x, pool_y, n_classes, seed=seed, target=target, max_commit=max_commit)
        if mode not in MODES:
            raise ConfigError(f"{self.name}: mode must be one of {MODES}, got {mode!r}")
        if mode == "white-box" and (model is None or not hasattr(model, "predict_proba")):
            raise ConfigError(
                f"{self.name}: mode 'white-box' needs the deployed model (model=...), got {model!r}"
            )
        if mode == "transfer" and model is not None:
            raise ConfigError(
                f"{self.name}: mode 'transfer' is black-box: it trains its own surrogate "
                "and must not get the deployed model"
            )
        if exploit not in EXPLOITS:
            raise ConfigError(f"{self.name}: exploit must be one of {EXPLOITS}, got {exploit!r}")
        self.attack = check_attack(attack, f"{self.name}: attack")
        self.eps, self.noise = check_perturbation(self.name, eps, norm, max_iter, noise)
        if patience < 1:
            raise ConfigError(f"{self.name}: patience must be >= 1, got {patience}")
        if chunk < 1:
            raise ConfigError(f"{self.name}: chunk must be >= 1, got {chunk}")
        if surrogate_params is not None and not isinstance(surrogate_params, Mapping):
            raise ConfigError(f"{self.name}: surrogate_params must be a table of parameters")
        if mode == "transfer":
            from movingtarget.models import MODELS

            MODELS.get(surrogate)  # an unknown name fails now, not at the first query
        self.mode, self.model, self.exploit = mode, model, exploit
        self.norm, self.max_iter, self.patience = norm, int(max_iter), int(patience)
        self.surrogate, self.surrogate_params = surrogate, dict(surrogate_params or {})
        self.chunk, self._seed = int(chunk), seed
        self._lo, self._hi = float(self.pool_x.min()), float(self.pool_x.max())
        self._passes = Passes(len(self.pool_y), self.rng)
        self._adv = np.empty_like(self.pool_x)
        self._crafted = np.zeros(len(self.pool_y), bool)
        self._perturber: Perturber | None = None
        self._taken = 0  # pool inputs explored (over every pass)
        self._item = -1  # the pool input of the mistake being exploited, -1 while exploring
        self._item_x: NDArray[np.float32] | None = None
        self._commit, self._failures = 1, 0
        self._sent = 0
        #: The 1-based query index of the first mistake, None until there is one.
        self.first_mistake: int | None = None

    # -- crafting ------------------------------------------------------------------

    def _gradient_model(self) -> Any:
        if self.mode == "white-box":
            return self.model
        from movingtarget.datasets.base import Split
        from movingtarget.models import build_model

        split = Split(
            f"{self.name}-surrogate",
            self.pool_x,
            self.pool_y,
            self.pool_x,
            self.pool_y,
            self.n_classes,
        )
        return build_model(self.surrogate, split, seed=self._seed, **self.surrogate_params)

    def _perturbed(self, idx: NDArray[np.int64]) -> NDArray[np.float32]:
        """The perturbed versions of pool inputs ``idx`` (crafted once, in chunks)."""
        missing = np.unique(idx[~self._crafted[idx]])
        if len(missing):
            if self._perturber is None:
                self._perturber = Perturber(
                    self._gradient_model(),
                    self.attack,
                    self.eps,
                    clip_values=(self._lo, self._hi),
                    norm=self.norm,
                    max_iter=self.max_iter,
                    seed=self._seed,
                )
            extra = np.flatnonzero(~self._crafted)
            extra = extra[~np.isin(extra, missing)][: max(self.chunk - len(missing), 0)]
            todo = np.concatenate([missing, extra]).astype(np.int64)
            self._adv[todo] = self._perturber.perturb(
                self.pool_x[todo], self.pool_y[todo], self.target
            )
            self._crafted[todo] = True
        return self._adv[idx]

    def _explore(self, n: int) -> Proposal:
        idx = self._passes.take(n)
        x = self._perturbed(idx)
        later = (self._taken + np.arange(n)) >= len(self.pool_y)
        self._taken += n
        if self.exploit == "distinct" and later.any():
            x = x.copy()
            x[later] = uniform_noise(x[later], self.noise, self.rng, self._lo, self._hi)
        return self._proposal(idx, x, noisy=True)

    # -- the contract --------------------------------------------------------------

    def propose(self, limit: int, exactly: bool = False) -> Proposal:
        if self.exploit == "distinct":
            n = limit if exactly else min(limit, self._commit)
            return self._explore(n)
        if self._item < 0:
            return self._explore(limit if exactly else 1)
        assert self._item_x is not None
        n = limit if exactly else min(limit, self._commit)
        idx = np.full(n, self._item, dtype=np.int64)
        x = np.repeat(self._item_x[None], n, axis=0)
        if self.exploit == "noisy-repeat":
            x = uniform_noise(x, self.noise, self.rng, self._lo, self._hi)
        return self._proposal(idx, x, noisy=True)

    def observe(self, labels: NDArray[np.int64]) -> None:
        assert self._last is not None
        wins = self._wins(labels)
        if self.first_mistake is None and wins.any():
            self.first_mistake = self._sent + int(np.argmax(wins)) + 1
        self._sent += len(wins)
        if self.exploit == "distinct":
            ok = self.first_mistake is not None and bool(wins.all())
            self._commit = min(self._commit * 2, self.max_commit) if ok else 1
            return
        if self._item < 0:
            if wins.any():
                first = int(np.argmax(wins))
                self._item = int(self._last.source[first])
                self._item_x = np.array(self._last.x[first], np.float32)
                self._commit, self._failures = 1, 0
            return
        if wins.all():
            self._failures = 0
            self._commit = min(self._commit * 2, self.max_commit)
            return
        tail = len(wins) - 1 - int(np.flatnonzero(wins)[-1]) if wins.any() else len(wins)
        self._failures = tail if wins.any() else self._failures + tail
        self._commit = 1
        if self._failures >= self.patience:
            self._item, self._item_x = -1, None
