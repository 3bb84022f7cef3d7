"""Adversaries: agents that propose queries, observe the answers, and adapt.

The contract is river-like and small: ``propose(limit)`` returns up to ``limit``
queries (the adversary decides how many to send before it looks at answers), and
``observe(labels)`` hands back the answers to exactly those queries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN
from movingtarget.errors import ConfigError

#: The target of an untargeted query.
NO_TARGET = -1


@dataclass
class Proposal:
    """Queries an adversary sends together, with what it knows about each.

    ``account`` says which of the adversary's accounts (client ids) sends each query:
    None (the default) sends every query from the adversary's one client id; an integer
    column ``k >= 0`` per query spreads them, and the arena gives account ``k`` of
    adversary ``i`` a client id of its own
    (:func:`~movingtarget.arena.arena.adversary_client`), account 0 being the default one.

    Examples
    --------
    >>> p = Proposal(np.zeros((2, 3), np.float32), np.array([4, 4]), np.array([1, 1]),
    ...              np.full(2, NO_TARGET), np.array([False, True]))
    >>> len(p), p.noisy.tolist(), p.account is None
    (2, [False, True], True)
    """

    x: NDArray[np.float32]
    source: NDArray[np.int64]  # index of the pool item each query is built from
    y_true: NDArray[np.int64]
    target: NDArray[np.int64]  # NO_TARGET when untargeted
    noisy: NDArray[np.bool_]  # True when the query is a perturbed copy of its source
    account: NDArray[np.int64] | None = None  # the sending account of each query (None: one)

    def __len__(self) -> int:
        return int(self.source.shape[0])


@runtime_checkable
class Adversary(Protocol):
    """An attacker with its own labeled pool, acting against a deployed defense.

    Examples
    --------
    Any object with ``name``, ``propose`` and ``observe`` is one:

    >>> from movingtarget.attacks import TestSetAttack
    >>> x = np.zeros((3, 2), np.float32); y = np.array([0, 1, 0])
    >>> isinstance(TestSetAttack(x, y, 2, seed=0), Adversary)
    True
    """

    name: str

    def propose(self, limit: int, exactly: bool = False) -> Proposal:
        """Up to ``limit`` queries (exactly ``limit`` when ``exactly``)."""
        ...

    def observe(self, labels: NDArray[np.int64]) -> None:
        """The answers (class or ABSTAIN) to the last proposal, in order."""
        ...


def model_needed(factory: Any, params: Mapping[str, Any]) -> bool:
    """Whether the adversary ``factory`` builds with ``params`` is a white-box one, which
    gets the deployed model (``model=``) besides its pool.

    A factory says so with a ``needs_model`` attribute: ``True`` (always), or a function
    of the attack's parameters (a mode chosen by configuration). Absent, it is False:
    the adversary sees only the answers to its queries.

    Examples
    --------
    >>> class WhiteBox:
    ...     needs_model = True
    >>> class Either:
    ...     @staticmethod
    ...     def needs_model(params):
    ...         return params.get("mode") == "white-box"
    >>> model_needed(WhiteBox, {}), model_needed(Either, {"mode": "transfer"})
    (True, False)
    >>> model_needed(PoolAdversary, {})
    False
    """
    need = getattr(factory, "needs_model", False)
    return bool(need(params) if callable(need) else need)


def success(
    labels: NDArray[np.int64], y_true: NDArray[np.int64], target: NDArray[np.int64]
) -> NDArray[np.bool_]:
    """Whether each answer is what the attacker wanted: wrong (untargeted) or the
    target class (targeted). ABSTAIN never counts as success."""
    targeted = target != NO_TARGET
    return (labels != ABSTAIN) & np.where(targeted, labels == target, labels != y_true)


class PoolAdversary:
    """Shared plumbing: a labeled pool, a seeded generator, the last proposal.

    Examples
    --------
    Subclasses implement ``propose``; ``observe`` records the answers.

    >>> x = np.zeros((3, 2), np.float32); y = np.array([0, 1, 0])
    >>> PoolAdversary(x, y, 2, seed=0, target=1).target
    1
    """

    name = "pool"

    def __init__(
        self,
        pool_x: NDArray[np.float32],
        pool_y: NDArray[np.int64],
        n_classes: int,
        *,
        seed: int = 0,
        target: int | None = None,
        max_commit: int = 1024,
    ) -> None:
        if len(pool_x) == 0 or len(pool_x) != len(pool_y):
            raise ConfigError(f"{self.name}: needs a non-empty labeled pool")
        if target is not None and not 0 <= int(target) < n_classes:
            raise ConfigError(
                f"{self.name}: target must be a class in [0, {n_classes}), got {target}"
            )
        if max_commit < 1:
            raise ConfigError(f"{self.name}: max_commit must be >= 1")
        self.pool_x = np.asarray(pool_x, dtype=np.float32)
        self.pool_y = np.asarray(pool_y, dtype=np.int64)
        self.n_classes = int(n_classes)
        self.target = NO_TARGET if target is None else int(target)
        self.max_commit = int(max_commit)
        self.rng = np.random.default_rng(seed)
        self._last: Proposal | None = None
        self._constants: dict[tuple[int, int, type], NDArray[np.generic]] = {}

    def _constant(self, value: int, n: int, dtype: type) -> NDArray[np.generic]:
        # read-only constant columns, shared between proposals of the same size
        key = (value, n, dtype)
        arr = self._constants.get(key)
        if arr is None:
            arr = np.full(n, value, dtype=dtype)
            arr.flags.writeable = False
            if len(self._constants) < 64:
                self._constants[key] = arr
        return arr

    def _proposal(
        self, idx: NDArray[np.int64], x: NDArray[np.float32] | None = None, noisy: bool = False
    ) -> Proposal:
        idx = np.asarray(idx, dtype=np.int64)
        p = Proposal(
            x=self.pool_x[idx] if x is None else x,
            source=idx,
            y_true=self.pool_y[idx],
            target=self._constant(self.target, len(idx), np.int64),  # type: ignore[arg-type]
            noisy=self._constant(int(noisy), len(idx), np.bool_),  # type: ignore[arg-type]
        )
        self._last = p
        return p

    def _wins(self, labels: NDArray[np.int64]) -> NDArray[np.bool_]:
        if self._last is None or len(labels) != len(self._last):
            raise ValueError("observe() must get one answer per proposed query")
        labels = np.asarray(labels)
        if self.target == NO_TARGET:
            return (labels != ABSTAIN) & (labels != self._last.y_true)
        return labels == self.target
