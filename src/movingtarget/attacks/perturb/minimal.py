"""The smallest perturbation that moves each input out of its class.

Papernot & McDaniel (2016) call a model *resilient* when it takes a large perturbation
to move a sample from its legitimate class to an adversarial one. Three searches, all
batch-first over the whole set:

* ``deepfool`` (L2): ART's DeepFool steps to the nearest linearized boundary; its
  perturbation (with ART's overshoot) is the L2 figure. Needs gradients.
* ``fgsm`` (L∞ or L2): the gradient of the loss is taken *once* per input; the
  perturbation ``eps · direction`` then only grows along that ray, so bisection over
  ``eps`` needs model predictions, not attacks (``steps`` batched predictions in all).
  Needs gradients.
* ``pgd`` (L∞ or L2): bisection over ``eps`` with one ART PGD run per step (per-input
  ``eps`` arrays, all inputs in one call). Stronger than the FGSM ray, ``steps`` times
  the cost of one PGD run. Needs gradients.
* ``hopskipjump`` (L2 or L∞): ART's decision-based minimization, for models without
  useful gradients (and for defenses): labels only, many queries per input.

Each returns, per input, the norm of the perturbation found (``inf`` where none was
found within the bound) for inputs the estimator classifies correctly; misclassified
inputs need no perturbation and are reported as 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.attacks.perturb.estimators import GRADIENTS, Estimator, float32, import_art
from movingtarget.attacks.perturb.registry import craft, distances
from movingtarget.errors import ConfigError

METHODS = ("deepfool", "fgsm", "pgd", "hopskipjump")

#: ``judge(x_adv, y) -> fooled``: which perturbed inputs count as moved out of class.
Judge = Callable[[NDArray[np.float32], NDArray[np.int64]], NDArray[np.bool_]]


@dataclass
class MinimalPerturbation:
    """Per-input minimal perturbations found by one search.

    ``norm`` is ``"2"`` or ``"inf"``; ``values[i]`` is 0 for an input the estimator
    already misclassifies, ``inf`` where the search found none within its bound.
    """

    method: str
    norm: str
    values: NDArray[np.float64]
    y: NDArray[np.int64]
    correct: NDArray[np.bool_]

    @property
    def found(self) -> NDArray[np.bool_]:
        """Correctly classified inputs whose class the search changed."""
        return self.correct & np.isfinite(self.values)


def _ray(est: Estimator, x: NDArray[np.float32], y: NDArray[np.int64], norm: str) -> Any:
    onehot = np.eye(est.n_classes, dtype=np.float32)[y]
    grad = np.asarray(est.art.loss_gradient(est.to_art(x), onehot), np.float64)
    grad = grad.reshape(len(x), -1)
    if norm == "inf":
        return np.sign(grad)
    length = np.sqrt((grad * grad).sum(axis=1, keepdims=True))
    return grad / np.where(length > 0, length, 1.0)


def _bisect(
    fooled_at: Any,
    n: int,
    max_eps: float,
    steps: int,
) -> NDArray[np.float64]:
    """Smallest ``eps`` in ``(0, max_eps]`` with ``fooled_at(eps)`` true, per input, to
    ``max_eps / 2**steps``; ``inf`` where even ``max_eps`` does not fool."""
    lo = np.zeros(n)
    hi = np.full(n, float(max_eps))
    ok = fooled_at(hi)
    hi[~ok] = np.inf
    active = np.flatnonzero(ok)
    for _ in range(steps):
        if not len(active):
            break
        mid = (lo[active] + hi[active]) / 2
        fooled = np.zeros(n, dtype=bool)
        eps = np.zeros(n)
        eps[active] = mid
        fooled[active] = fooled_at(eps, active)
        hi[active[fooled[active]]] = mid[fooled[active]]
        lo[active[~fooled[active]]] = mid[~fooled[active]]
    return hi


def minimal_perturbation(
    est: Estimator,
    x: NDArray[np.floating[Any]],
    y: NDArray[np.integer[Any]],
    *,
    method: str = "deepfool",
    norm: str = "2",
    max_eps: float | None = None,
    steps: int = 10,
    pgd_iter: int = 10,
    judge: Judge | None = None,
    **budget: Any,
) -> MinimalPerturbation:
    """The smallest perturbation that changes each input's class (see the module docs).

    ``max_eps`` bounds the bisections (default: the data range in L∞, its width times
    the square root of the input size in L2, i.e. the whole box); ``steps`` bisection
    halvings; ``pgd_iter`` PGD iterations per bisection step; ``budget`` goes to the
    DeepFool or HopSkipJump attack. ``judge(x_adv, y) -> fooled`` (``fgsm`` only)
    decides what counts as moved out of the class, e.g. a defense's *wrong answer*
    (an ABSTAIN is then not a success); default: the estimator's class differs from ``y``.

    Examples
    --------
    >>> import numpy as np
    >>> from movingtarget.datasets import load_digits
    >>> from movingtarget.models import build_model
    >>> from movingtarget.attacks.perturb.estimators import wrap_model
    >>> split = load_digits().split(seed=0)
    >>> est = wrap_model(build_model("logistic", split), clip_values=(0.0, 1.0))
    >>> res = minimal_perturbation(est, split.x_test[:40], split.y_test[:40], method="fgsm",
    ...                            norm="inf")
    >>> bool(np.median(res.values[res.found]) < 0.2)
    True
    """
    if method not in METHODS:
        raise ConfigError(f"resilience method must be one of {', '.join(METHODS)}, got {method!r}")
    norm = {"inf": "inf", "2": "2", "l2": "2", "linf": "inf"}.get(str(norm).lower(), str(norm))
    if norm not in ("2", "inf") or (method == "deepfool" and norm != "2"):
        allowed = "2" if method == "deepfool" else "2 or inf"
        raise ConfigError(f"resilience method {method!r} measures norm {allowed}, not {norm!r}")
    if method != "hopskipjump" and not est.gives(GRADIENTS):
        raise ConfigError(
            f"resilience method {method!r} needs gradients; {est.source} gives "
            f"{', '.join(est.capabilities)}: use method 'hopskipjump' (labels only)"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"resilience steps must be an integer >= 1, got {steps!r}")
    xs = float32(x)
    ys = np.asarray(y, dtype=np.int64)
    lo, hi = est.clip_values
    width = int(np.prod(xs.shape[1:]))
    bound = (hi - lo) * (1.0 if norm == "inf" else np.sqrt(width)) if max_eps is None else max_eps
    if not np.isfinite(bound) or bound <= 0:
        raise ConfigError(f"resilience max_eps must be > 0, got {max_eps!r}")
    if judge is not None and method != "fgsm":
        raise ConfigError(f"a judge of success is for method 'fgsm', not {method!r}")
    values = np.zeros(len(xs))
    correct = est.predict_labels(xs) == ys
    at = np.flatnonzero(correct)
    if len(at):
        values[at] = _search(
            est, xs[at], ys[at], method, norm, float(bound), steps, pgd_iter, judge, budget
        )
    return MinimalPerturbation(method, norm, values, ys, correct)


def _search(
    est: Estimator,
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    method: str,
    norm: str,
    bound: float,
    steps: int,
    pgd_iter: int,
    judge: Judge | None,
    budget: dict[str, Any],
) -> NDArray[np.float64]:
    lo, hi = est.clip_values
    if method in ("deepfool", "hopskipjump"):
        out = craft(method, est, x, y, norm=norm if method == "hopskipjump" else None, **budget)
        size = out.l2 if norm == "2" else out.linf
        return np.where(out.success & (size <= bound), size, np.inf)
    flat = x.reshape(len(x), -1).astype(np.float64)
    if method == "fgsm":
        ray = _ray(est, x, y, norm)

        def fooled_at(eps: NDArray[np.float64], idx: Any = slice(None)) -> NDArray[np.bool_]:
            e = eps[idx][:, None]
            moved = np.clip(flat[idx] + e * ray[idx], lo, hi).reshape((-1, *x.shape[1:]))
            if judge is not None:
                return np.asarray(judge(float32(moved), y[idx]), dtype=bool)
            return est.predict_labels(moved) != y[idx]

        found = _bisect(fooled_at, len(x), bound, steps)

        def moved(e: NDArray[np.float64], i: Any) -> NDArray[np.float64]:
            return np.clip(flat[i] + e[i][:, None] * ray[i], lo, hi)

        # the clip can make the realized perturbation smaller than eps: report what moved
        return _realized(x, found, moved, norm)
    attack_of = _pgd_factory(est, norm, pgd_iter)

    def pgd_fooled(eps: NDArray[np.float64], idx: Any = slice(None)) -> NDArray[np.bool_]:
        sub = np.arange(len(x))[idx]
        x_adv = attack_of(eps[sub]).generate(
            x=est.to_art(x[sub]), y=np.eye(est.n_classes, dtype=np.float32)[y[sub]]
        )
        return est.predict_labels(x_adv) != y[sub]

    return _bisect(pgd_fooled, len(x), bound, steps)


def _realized(
    x: NDArray[np.float32],
    eps: NDArray[np.float64],
    moved: Any,
    norm: str,
) -> NDArray[np.float64]:
    out = np.full(len(x), np.inf)
    ok = np.flatnonzero(np.isfinite(eps))
    if len(ok):
        x_adv = moved(eps, ok)
        l2, linf, _ = distances(x[ok].reshape(len(ok), -1), x_adv)
        out[ok] = l2 if norm == "2" else linf
    return out


def _pgd_factory(est: Estimator, norm: str, pgd_iter: int) -> Any:
    """``attack_of(eps)``: ART's PGD with one ``eps`` per input (a column array, which
    ART broadcasts over features; its batch size is the whole set so shapes agree)."""
    if isinstance(pgd_iter, bool) or not isinstance(pgd_iter, int) or pgd_iter < 1:
        raise ConfigError(f"resilience pgd_iter must be an integer >= 1, got {pgd_iter!r}")

    import_art()
    from art.attacks.evasion import ProjectedGradientDescent

    def attack_of(eps: NDArray[np.float64]) -> Any:
        e = eps.reshape((len(eps),) + (1,) * len(est.art_shape)).astype(np.float32)
        return ProjectedGradientDescent(
            est.art,
            norm=np.inf if norm == "inf" else 2,
            eps=e,
            eps_step=e / 4,
            max_iter=pgd_iter,
            batch_size=len(eps),
            verbose=False,
        )

    return attack_of
