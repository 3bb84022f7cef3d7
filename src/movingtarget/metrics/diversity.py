"""How different a pool's members are: benign disagreement and attack transfer.

A moving target helps only where its members differ. Two measures:

* **disagreement**: for each pair of members, the share of benign inputs on which
  their argmax classes differ; :func:`disagreement` averages it over pairs;
* **transfer**: adversarial examples crafted against member ``i`` (a per-input
  attack through the Adversarial Robustness Toolbox, FGSM by default) that also
  fool member ``j``. ``transfer[i, j]`` is the share, among the inputs every member
  classifies correctly and the attack on ``i`` moved out of their class, of those
  member ``j`` also misclassifies. Low transfer means a mistake found on one member
  rarely carries over to the next one a moving target serves.

Transfer needs members with gradients (the reference ``logistic`` through ART's
logistic-regression estimator, torch models); scikit-learn's ``mlp`` has none, and
asking for it is a :class:`~movingtarget.errors.ConfigError` from the attack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.errors import ConfigError

__all__ = [
    "PoolDiversity",
    "disagreement",
    "disagreement_matrix",
    "pool_diversity",
    "transfer_matrix",
]


def _members(pool: Any) -> list[Any]:
    members = getattr(pool, "members", None)
    if not members or not callable(getattr(pool, "member_proba", None)):
        raise ConfigError(
            f"pool diversity needs a pool model (model 'pool'); got {type(pool).__name__}"
        )
    return list(members)


def disagreement_matrix(pool: Any, x: NDArray[np.float32]) -> NDArray[np.float64]:
    """``(K, K)``: the share of ``x`` on which members ``i`` and ``j`` answer different classes.

    >>> import numpy as np
    >>> from movingtarget.models import ModelPool
    >>> class Fixed:
    ...     n_classes = 2
    ...     def __init__(self, c): self.c = c
    ...     def predict_proba(self, x): return np.eye(2)[np.full(len(x), self.c)]
    >>> disagreement_matrix(ModelPool([Fixed(0), Fixed(0), Fixed(1)]), np.zeros((4, 1))).tolist()
    [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    """
    _members(pool)
    votes = np.asarray(pool.member_proba(x)).argmax(axis=2)  # (K, n)
    return (votes[:, None, :] != votes[None, :, :]).mean(axis=2)


def disagreement(pool: Any, x: NDArray[np.float32]) -> float:
    """Mean pairwise disagreement of the members' argmax on ``x`` (0 for one member).

    >>> import numpy as np
    >>> from movingtarget.models import ModelPool
    >>> class Fixed:
    ...     n_classes = 2
    ...     def __init__(self, c): self.c = c
    ...     def predict_proba(self, x): return np.eye(2)[np.full(len(x), self.c)]
    >>> round(disagreement(ModelPool([Fixed(0), Fixed(0), Fixed(1)]), np.zeros((4, 1))), 4)
    0.6667
    """
    m = disagreement_matrix(pool, x)
    pairs = list(combinations(range(len(m)), 2))
    return float(np.mean([m[i, j] for i, j in pairs])) if pairs else 0.0


def transfer_matrix(
    pool: Any,
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    *,
    attack: str = "fgsm",
    clip_values: tuple[float, float] | None = None,
    seed: int = 0,
    **budget: Any,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """``(transfer, crafted)``: ``transfer[i, j]`` as in the module docs (``NaN`` where
    the attack on ``i`` moved no input), ``crafted[i]`` how many inputs it moved.

    The diagonal is 1 wherever defined (an example counts only if it fools its own
    member). ``budget`` goes to the attack (``eps=0.1`` ...); ``clip_values`` default
    to the range of ``x``.
    """
    from movingtarget.attacks.perturb import craft
    from movingtarget.attacks.perturb.estimators import data_range, wrap_model

    members = _members(pool)
    xs = np.asarray(x, np.float32)
    ys = np.asarray(y, np.int64)
    clip = clip_values if clip_values is not None else data_range(xs)
    clean = np.asarray(pool.member_proba(xs)).argmax(axis=2)
    keep = (clean == ys).all(axis=0)  # inputs no member gets wrong to begin with
    xk, yk = xs[keep], ys[keep]
    k = len(members)
    out = np.full((k, k), np.nan)
    crafted = np.zeros(k, dtype=np.int64)
    for i, member in enumerate(members):
        est = wrap_model(member, clip_values=clip)
        x_adv = craft(attack, est, xk, yk, seed=seed, **budget).x_adv
        # every member judges the whole adversarial batch in one call
        fooled = np.asarray(pool.member_proba(x_adv)).argmax(axis=2) != yk  # (K, n)
        own = fooled[i]
        crafted[i] = int(own.sum())
        if crafted[i]:
            out[i] = fooled[:, own].mean(axis=1)
    return out, crafted


@dataclass
class PoolDiversity:
    """A pool's diversity on one set of inputs (see the module docs).

    ``transfer`` is the mean of the off-diagonal transfer rates (``None`` when not
    measured); ``crafted`` counts the examples each member's attack produced.

    Examples
    --------
    >>> import numpy as np
    >>> PoolDiversity(0.05, np.zeros((2, 2))).transfer is None
    True
    """

    disagreement: float
    disagreement_matrix: NDArray[np.float64]
    transfer: float | None = None
    transfer_matrix: NDArray[np.float64] | None = None
    crafted: NDArray[np.int64] | None = None
    attack: str = ""
    budget: dict[str, Any] = field(default_factory=dict)


def pool_diversity(
    pool: Any,
    x: NDArray[np.float32],
    y: NDArray[np.int64] | None = None,
    *,
    attack: str | None = "fgsm",
    clip_values: tuple[float, float] | None = None,
    seed: int = 0,
    **budget: Any,
) -> PoolDiversity:
    """Disagreement on ``x`` and, given labels ``y`` and an ``attack``, transfer.

    Examples
    --------
    >>> from movingtarget.datasets import load_digits
    >>> from movingtarget.models import build_model
    >>> split = load_digits().split(seed=0)
    >>> pool = build_model("pool", split, members=3)
    >>> d = pool_diversity(pool, split.x_test[:100], split.y_test[:100], eps=0.1)
    >>> 0 <= d.disagreement <= 1, 0 <= d.transfer <= 1
    (True, True)
    """
    m = disagreement_matrix(pool, x)
    pairs = list(combinations(range(len(m)), 2))
    dis = float(np.mean([m[i, j] for i, j in pairs])) if pairs else 0.0
    if y is None or attack is None or len(m) < 2:
        return PoolDiversity(dis, m)
    tm, crafted = transfer_matrix(
        pool, x, y, attack=attack, clip_values=clip_values, seed=seed, **budget
    )
    off = tm[~np.eye(len(tm), dtype=bool)]
    off = off[~np.isnan(off)]
    return PoolDiversity(
        dis,
        m,
        float(off.mean()) if len(off) else None,
        tm,
        crafted,
        attack,
        dict(budget),
    )
