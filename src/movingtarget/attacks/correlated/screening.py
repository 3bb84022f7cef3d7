"""White-box offline screening (Goodfellow 2019, section 6): an attacker with an exact
copy of the deployed model finds mistakes offline, then presents each one once.

Exact memorization defeats the test set attack because its only way to keep winning
is to repeat a mistake. An attacker who can evaluate the model offline need not
repeat: it screens for many *distinct* mistakes first, and a memory that refuses only
exact repeats never sees one twice, so ``r~`` goes to 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.attacks.base import NO_TARGET, PoolAdversary, Proposal
from movingtarget.attacks.correlated._perturbing import (
    Perturber,
    check_attack,
    check_perturbation,
    craft_cost,
    row_keys,
    uniform_noise,
)
from movingtarget.attacks.correlated.test_set import TestSetAttack
from movingtarget.errors import ConfigError

#: What the screening attacker sends once every screened mistake has been presented.
THEN = ("noisy", "repeat")
#: Rows screened per model evaluation call in the noisy stage.
NOISE_BATCH = 4096


class ScreeningAttack(PoolAdversary):
    """Spend an offline budget finding distinct mistakes of the deployed model, then
    send each one once.

    The attacker holds an exact copy of the deployed model (it is white-box:
    ``needs_model``). Before its first query it spends ``budget`` offline model
    evaluations, in this order, keeping every input the model gets wrong (or, with a
    ``target``, answers as the target) that is byte-distinct from those already kept:

    1. **natural**: the pool's inputs as they are, in a seeded order (1 evaluation each);
    2. **perturbed**: for each attack in ``perturb`` (``fgsm``, ``pgd``), each pool input
       perturbed within ``eps`` through the project's ART adapters
       (:func:`~movingtarget.attacks.perturb.craft` on
       :func:`~movingtarget.attacks.perturb.estimators.wrap_model` of the model): a
       gradient per step plus the check (``fgsm`` 2 evaluations, ``pgd`` ``max_iter + 1``);
    3. **noisy**: uniform noise of size ``noise`` (L-infinity) around the mistakes found
       so far, in turn, until the budget is spent (1 evaluation each).

    Online it sends the screened mistakes in that order, each once, in runs of up to
    ``max_commit``. When they run out it goes on, by ``then``:

    * ``"noisy"`` (default): fresh, unscreened noisy variants of the screened mistakes
      (new to an exact memory; most stay mistakes), in turn;
    * ``"repeat"``: the screened mistakes again, in turn (an exact memory refuses these).

    With nothing screened (``budget = 0``, or no mistake found) it is the natural test
    set attack (:class:`TestSetAttack`, the same seed, ``patience`` and ``max_commit``).

    Parameters
    ----------
    model:
        The deployed model (passed by :func:`~movingtarget.attacks.build_adversary`).
    budget:
        Offline model evaluations (>= 0).
    perturb:
        Per-input attacks of stage 2, in order (``"fgsm"``, ``"pgd"``); empty to skip.
    eps, norm, max_iter:
        Their budget: size ``eps`` in norm ``"inf"`` or ``"2"``, PGD's ``max_iter`` steps.
    noise:
        The L-infinity size of stage 3's and ``then="noisy"``'s noise (> 0).
    then:
        ``"noisy"`` or ``"repeat"``, see above.
    target:
        None (untargeted) or the class the attacker wants.

    Attributes
    ----------
    screened:
        After screening: distinct mistakes found per stage (``natural``, ``perturbed``,
        ``noisy``), and ``spent``, the evaluations used.

    Examples
    --------
    >>> class Parity:                        # wrong on every input whose sum is odd
    ...     n_classes = 2
    ...     def predict_proba(self, x):
    ...         odd = np.round(x.sum(axis=1)).astype(int) % 2
    ...         return np.eye(2)[odd]
    >>> x = np.arange(6, dtype=np.float32)[:, None]; y = np.zeros(6, np.int64)
    >>> a = ScreeningAttack(x, y, 2, model=Parity(), budget=6, perturb=())
    >>> p = a.propose(3)                     # the three distinct mistakes, once each
    >>> sorted(p.x[:, 0].tolist()), a.screened
    ([1.0, 3.0, 5.0], {'natural': 3, 'perturbed': 0, 'noisy': 0, 'spent': 6})
    """

    name = "screening"
    needs_model = True

    def __init__(
        self,
        pool_x: NDArray[np.float32],
        pool_y: NDArray[np.int64],
        n_classes: int,
        *,
        model: Any,
        seed: int = 0,
        target: int | None = None,
        budget: int = 10_000,
        perturb: str | list[str] | tuple[str, ...] = ("fgsm",),
        eps: float = 0.1,
        norm: str = "inf",
        max_iter: int = 20,
        noise: float = 0.01,
        then: str = "noisy",
        patience: int = 1,
        max_commit: int = 1024,
    ) -> None:
        super().__init__(pool_x, pool_y, n_classes, seed=seed, target=target, max_commit=max_commit)
        if model is None or not hasattr(model, "predict_proba"):
            raise ConfigError(f"{self.name}: model must be the deployed model, got {model!r}")
        if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 0:
            raise ConfigError(f"{self.name}: budget must be an integer >= 0, got {budget!r}")
        attacks = (perturb,) if isinstance(perturb, str) else tuple(perturb)
        self.perturb = tuple(check_attack(a, f"{self.name}: perturb") for a in attacks)
        self.eps, self.noise = check_perturbation(self.name, eps, norm, max_iter, noise)
        if then not in THEN:
            raise ConfigError(f"{self.name}: then must be one of {THEN}, got {then!r}")
        if patience < 1:
            raise ConfigError(f"{self.name}: patience must be >= 1, got {patience}")
        self.model, self.budget, self.norm = model, int(budget), norm
        self.max_iter, self.then, self.patience = int(max_iter), then, int(patience)
        self._seed = seed
        self._lo, self._hi = float(self.pool_x.min()), float(self.pool_x.max())
        self.screened: dict[str, int] = {}
        self._x = np.zeros((0, *self.pool_x.shape[1:]), np.float32)
        self._source = np.zeros(0, np.int64)
        self._noisy = np.zeros(0, bool)
        self._cursor = 0  # screened mistakes sent
        self._again = 0  # queries sent after they ran out
        self._delegate: TestSetAttack | None = None

    # -- offline ---------------------------------------------------------------------

    def _wanted(self, x: NDArray[np.float32], y: NDArray[np.int64]) -> NDArray[np.bool_]:
        """What the model answers as the attacker wants (offline, no defense)."""
        pred = np.asarray(self.model.predict_proba(x)).argmax(axis=1)
        if self.target == NO_TARGET:
            return np.asarray(pred != y)
        return np.asarray((pred == self.target) & (y != self.target))

    def _screen(self) -> None:
        n = len(self.pool_y)
        order = self.rng.permutation(n)
        xs: list[NDArray[np.float32]] = []
        sources: list[NDArray[np.int64]] = []
        noisy: list[NDArray[np.bool_]] = []
        seen: set[bytes] = set()
        spent = 0

        def keep(x: NDArray[np.float32], src: NDArray[np.int64], is_noisy: bool) -> int:
            wins = np.flatnonzero(self._wanted(x, self.pool_y[src]))
            fresh = []
            for i, key in zip(wins, row_keys(x[wins]), strict=True):
                if key not in seen:
                    seen.add(key)
                    fresh.append(i)
            pick = np.asarray(fresh, np.int64)
            xs.append(x[pick])
            sources.append(src[pick])
            noisy.append(np.full(len(pick), is_noisy))
            return len(pick)

        counts = {"natural": 0, "perturbed": 0, "noisy": 0}
        k = min(self.budget, n)
        if k:
            idx = order[:k]
            counts["natural"] = keep(self.pool_x[idx], idx, False)
            spent += k
        for attack in self.perturb:
            k = min(n, (self.budget - spent) // craft_cost(attack, self.max_iter))
            if k <= 0:
                continue
            idx = order[:k]
            perturber = Perturber(
                self.model,
                attack,
                self.eps,
                clip_values=(self._lo, self._hi),
                norm=self.norm,
                max_iter=self.max_iter,
                seed=self._seed,
            )
            x_adv = perturber.perturb(self.pool_x[idx], self.pool_y[idx], self.target)
            counts["perturbed"] += keep(x_adv, idx, True)
            spent += k * craft_cost(attack, self.max_iter)
        base_x = np.concatenate([self._x, *xs]) if xs else self._x
        base_src = np.concatenate([self._source, *sources]) if sources else self._source
        turn = 0
        while spent < self.budget and len(base_src):
            k = min(NOISE_BATCH, self.budget - spent)
            pick = (turn + np.arange(k)) % len(base_src)
            turn += k
            x = uniform_noise(base_x[pick], self.noise, self.rng, self._lo, self._hi)
            counts["noisy"] += keep(x, base_src[pick], True)
            spent += k
        if xs:
            self._x = np.concatenate(xs).astype(np.float32)
            self._source = np.concatenate(sources).astype(np.int64)
            self._noisy = np.concatenate(noisy).astype(bool)
        self.screened = {**counts, "spent": spent}

    # -- online ----------------------------------------------------------------------

    def _test_set(self) -> TestSetAttack:
        if self._delegate is None:
            self._delegate = TestSetAttack(
                self.pool_x,
                self.pool_y,
                self.n_classes,
                seed=self._seed,
                target=None if self.target == NO_TARGET else self.target,
                patience=self.patience,
                max_commit=self.max_commit,
            )
        return self._delegate

    def propose(self, limit: int, exactly: bool = False) -> Proposal:
        if not self.screened:
            self._screen()
        found = len(self._source)
        if found == 0:
            p = self._test_set().propose(limit, exactly)
            self._last = p
            return p
        n = limit if exactly else min(limit, self.max_commit)
        fresh = np.arange(self._cursor, min(self._cursor + n, found))
        self._cursor += len(fresh)
        again = (self._again + np.arange(n - len(fresh))) % found
        self._again += len(again)
        x_again = self._x[again]
        if self.then == "noisy":
            x_again = uniform_noise(x_again, self.noise, self.rng, self._lo, self._hi)
        pick = np.concatenate([fresh, again])
        src = self._source[pick]
        p = Proposal(
            x=np.concatenate([self._x[fresh], x_again]).astype(np.float32),
            source=src,
            y_true=self.pool_y[src],
            target=np.full(len(src), self.target, np.int64),
            noisy=np.concatenate([self._noisy[fresh], np.full(len(again), self.then == "noisy")])
            | np.concatenate([np.zeros(len(fresh), bool), self._noisy[again]]),
        )
        self._last = p
        return p

    def observe(self, labels: NDArray[np.int64]) -> None:
        self._wins(labels)  # checks one answer per query
        if len(self._source) == 0:
            self._test_set().observe(labels)
