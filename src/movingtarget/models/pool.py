"""Model pools: K members of one registered model, trained to differ.

A moving-target defense (:class:`movingtarget.defenses.moving_target.MovingTarget`)
serves one member's decision at a time and abstains where members disagree; it
needs each member's probabilities, which :meth:`ModelPool.member_proba` gives for a
whole batch at once (one call per member, never one per query).

Members differ by ``variation``:

* ``"bootstrap"`` (default): member ``i`` is trained on its own seeded bootstrap
  resample of the training split (``n`` draws with replacement), with its own seed;
* ``"seed"``: every member sees the whole split and only the training seed differs.
  Deterministic solvers (the reference ``logistic``: L-BFGS from zero) then give
  identical members, so ``"seed"`` only diversifies models whose training is random
  (``mlp``, ``torch-mlp``, ``cnn``).

The pool is cached by :func:`~movingtarget.models.build_model` like any other model:
the key holds ``members``, ``member``, ``variation`` and ``member_params``. A cached
pool of torch members is not moved to another ``device`` when loaded (the members
stay where they were trained); build it with ``cache_dir`` of its own to retrain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.datasets.base import Split
from movingtarget.errors import ConfigError
from movingtarget.models.base import Model

__all__ = ["VARIATIONS", "MemberRecipe", "ModelPool", "member_seed", "pool"]

#: How members are made to differ.
VARIATIONS = ("bootstrap", "seed")


def member_seed(seed: int, index: int) -> int:
    """The training seed of member ``index`` of a pool seeded ``seed`` (a 31-bit int,
    since scikit-learn wants ``random_state < 2**32``): distinct per member and per pool.

    >>> member_seed(0, 0) != member_seed(0, 1) != member_seed(1, 0)
    True
    """
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0]
    return int(state) >> 1


@dataclasses.dataclass(frozen=True)
class MemberRecipe:
    """How a pool's members are trained, kept with the pool so that a continual refresh
    (:class:`~movingtarget.defenses.refresh.Refresh`) can train a new member the way the
    deployed ones were.

    Examples
    --------
    >>> from movingtarget.datasets import load_digits
    >>> split = load_digits().split(seed=0)
    >>> m = MemberRecipe("logistic").train(split, seed=3)
    >>> m.n_classes
    10
    """

    member: str
    variation: str = "bootstrap"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    device: str = "auto"

    def train(
        self,
        split: Split,
        seed: int,
        extra_x: NDArray[np.float32] | None = None,
        extra_y: NDArray[np.int64] | None = None,
    ) -> Model:
        """One member trained with ``seed``: under ``"bootstrap"`` on
        :func:`bootstrap_split` of that seed. ``extra_x, extra_y`` (labeled inputs) are
        added to its training set after the resample, so none of them is left out."""
        from movingtarget.models import MODELS, _bind  # the registry imports this module

        data = bootstrap_split(split, seed) if self.variation == "bootstrap" else split
        if extra_x is not None and extra_y is not None and len(extra_y):
            data = dataclasses.replace(
                data,
                x_train=np.concatenate([data.x_train, np.asarray(extra_x, np.float32)]),
                y_train=np.concatenate([data.y_train, np.asarray(extra_y, np.int64)]),
            )
        args = _bind(self.member, data, seed, self.device, dict(self.params))
        return MODELS.get(self.member)(data, **args)


class ModelPool:
    """K trained models behind one :class:`~movingtarget.models.base.Model`.

    ``predict_proba`` is the members' mean; :meth:`member_proba` keeps them apart.

    Parameters
    ----------
    members:
        At least one model; all must have the same ``n_classes``.
    member:
        The registered name the members were built from (for reports).
    variation:
        How they were made to differ (for reports).
    recipe:
        How to train another member (set by :func:`pool`; None for a pool of given models,
        which a refresh then refuses).

    Examples
    --------
    >>> import numpy as np
    >>> class Fixed:
    ...     n_classes = 2
    ...     def __init__(self, p): self.p = p
    ...     def predict_proba(self, x): return np.tile(self.p, (len(x), 1))
    >>> pool = ModelPool([Fixed([0.8, 0.2]), Fixed([0.2, 0.8])])
    >>> pool.member_proba(np.zeros((3, 1), np.float32)).shape
    (2, 3, 2)
    >>> pool.predict_proba(np.zeros((1, 1), np.float32)).tolist()
    [[0.5, 0.5]]
    """

    #: Class default: a pool unpickled from an older cache entry has no recipe.
    recipe: MemberRecipe | None = None

    def __init__(
        self,
        members: list[Model],
        *,
        member: str = "",
        variation: str = "bootstrap",
        recipe: MemberRecipe | None = None,
    ) -> None:
        if not members:
            raise ConfigError("model 'pool': members must hold at least one model")
        classes = {int(m.n_classes) for m in members}
        if len(classes) != 1:
            raise ConfigError(f"model 'pool': members disagree on n_classes ({sorted(classes)})")
        self.members = list(members)
        self.n_classes = classes.pop()
        self.member = member
        self.variation = variation
        self.recipe = recipe
        shape = getattr(members[0], "input_shape", None)
        if shape is not None:
            self.input_shape = tuple(shape)

    def __len__(self) -> int:
        return len(self.members)

    def member_proba(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """Each member's probabilities, ``(K, n, k)``: one call per member on the batch."""
        out = np.empty((len(self.members), len(x), self.n_classes), dtype=np.float64)
        for i, m in enumerate(self.members):
            out[i] = m.predict_proba(x)
        return out

    def predict_proba(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """The members' mean probabilities, ``(n, k)``."""
        return self.member_proba(x).mean(axis=0)

    @property
    def online(self) -> bool:
        """Whether every member can learn from labels (``partial_fit``)."""
        return all(callable(getattr(m, "partial_fit", None)) for m in self.members)

    def partial_fit(self, x: NDArray[np.float32], y: NDArray[np.int64]) -> None:
        """Update every member on the labeled inputs (only when :attr:`online`)."""
        if not self.online:
            raise ConfigError(
                f"{self.describe()}: its members have no partial_fit; use online members "
                "(mlp, torch-mlp, cnn)"
            )
        for m in self.members:
            m.partial_fit(x, y)  # type: ignore[attr-defined]

    def describe(self) -> str:
        """E.g. ``pool(5 x logistic, bootstrap)``."""
        return f"pool({len(self.members)} x {self.member or '?'}, {self.variation})"


def bootstrap_split(split: Split, seed: int) -> Split:
    """``split`` with its training set replaced by a seeded bootstrap resample (the
    same size, drawn with replacement; the test set is unchanged).

    >>> from movingtarget.datasets import load_digits
    >>> s = load_digits().split(seed=0)
    >>> b = bootstrap_split(s, 1)
    >>> len(b.y_train) == len(s.y_train), len(set(b.x_train[:, 0].tolist())) > 0
    (True, True)
    """
    n = len(split.y_train)
    idx = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB007])).integers(0, n, n)
    return dataclasses.replace(split, x_train=split.x_train[idx], y_train=split.y_train[idx])


def pool(
    split: Split,
    *,
    seed: int = 0,
    members: int = 5,
    member: str = "logistic",
    variation: str = "bootstrap",
    member_params: Mapping[str, Any] | None = None,
    device: str = "auto",
) -> ModelPool:
    """Train ``members`` models registered as ``member``, made to differ by ``variation``.

    Member ``i`` is trained with seed :func:`member_seed` ``(seed, i)``; under
    ``"bootstrap"`` also on :func:`bootstrap_split` of that seed. ``member_params`` go
    to every member's factory; ``device`` to factories that take one (torch models).

    Examples
    --------
    >>> from movingtarget.datasets import load_digits
    >>> p = pool(load_digits().split(seed=0), members=3)
    >>> len(p.members), p.n_classes, p.describe()
    (3, 10, 'pool(3 x logistic, bootstrap)')
    """
    from movingtarget.models import MODELS  # the registry imports this module

    if isinstance(members, bool) or not isinstance(members, int | np.integer) or members < 1:
        raise ConfigError(f"model 'pool': members must be a positive integer, got {members!r}")
    if variation not in VARIATIONS:
        raise ConfigError(
            f"model 'pool': variation must be one of {', '.join(VARIATIONS)}, got {variation!r}"
        )
    if not isinstance(member, str) or member == "pool":
        raise ConfigError(
            f"model 'pool': member must name a registered model other than 'pool', got {member!r}"
        )
    MODELS.get(member)  # an unknown name: the registry's error, with the choices
    recipe = MemberRecipe(member, variation, dict(member_params or {}), device)
    trained = [recipe.train(split, member_seed(seed, i)) for i in range(int(members))]
    return ModelPool(trained, member=member, variation=variation, recipe=recipe)
