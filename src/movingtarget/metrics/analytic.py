"""Analytic predictions of ``r~`` (Goodfellow, 2019), computed for the model at hand.

Each prediction says how it compares with the measurement (``kind``):

* ``=``: deterministic answers, test set attack: ``(m - T + 1) / m`` with
  ``E[T] = 1 / r`` where ``r`` is the share of the attacker's pool answered as it
  wants (0.9951 for r = 0.02, m = 10,000);
* ``late``: stochastic answers, rate tracking: the best per-input success rate,
  reached in the late phase;
* ``<=``: exact memorization with abstention against exact repeats: at most ``r``;
* ``repeats``: memorization with a random class: ``1/k`` (targeted) or
  ``(k-1)/k`` (untargeted) on repeated queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from movingtarget.attacks.base import NO_TARGET
from movingtarget.defenses.abstain import ConfidenceThreshold
from movingtarget.defenses.base import Defense
from movingtarget.defenses.decision import Sample
from movingtarget.defenses.memorize import Memorize
from movingtarget.defenses.near_repeat import NearRepeat


@dataclass(frozen=True)
class Prediction:
    """A predicted ``r~`` and which measurement it is comparable with.

    Examples
    --------
    >>> Prediction(0.9951, "=").measured_key
    'r_tilde'
    >>> Prediction(0.1, "repeats").measured_key
    'r_tilde_repeats'
    """

    value: float
    kind: str  # "=", "late", "<=", "repeats", or "" when there is no prediction
    note: str = ""
    #: The chance that a fresh query is answered as the attacker wants (``r`` of the
    #: attacker's pool under this defense): what the ``=`` curve is computed from.
    rate: float = float("nan")

    @property
    def measured_key(self) -> str:
        """The :class:`~movingtarget.metrics.measured.AttackMetrics` field to compare."""
        return {"late": "r_tilde_late", "repeats": "r_tilde_repeats"}.get(self.kind, "r_tilde")

    def curve(self, t: NDArray[np.integer] | list[int]) -> NDArray[np.float64] | None:
        """The predicted cumulative ``r~`` after ``t`` queries, for each ``t``: the curve
        that the measured cumulative ``r~`` is compared with. ``=``: the expected test set
        attack (:func:`test_set_curve`); ``<=``: the bound, flat; None for ``late`` and
        ``repeats`` (they speak of a part of the run, not of the cumulative curve).

        >>> Prediction(0.02, "<=").curve([1, 10]).tolist()
        [0.02, 0.02]
        >>> Prediction(0.9951, "=", rate=0.02).curve([1, 50, 10_000]).round(4).tolist()
        [0.02, 0.3769, 0.9951]
        """
        ts = np.asarray(t, dtype=np.float64)
        if self.kind == "<=":
            return np.full(ts.shape, self.value)
        if self.kind == "=" and not np.isnan(self.rate):
            return test_set_curve(self.rate, ts)
        return None


NONE = Prediction(float("nan"), "", "no closed form")


def test_set_prediction(r: float, m: int) -> float:
    """``(m - E[T] + 1) / m`` with ``E[T] = 1/r``: the deterministic test set attack."""
    if r <= 0:
        return 0.0
    return max(0.0, (m - 1.0 / r + 1.0) / m)


def test_set_curve(r: float, t: NDArray[np.floating] | NDArray[np.integer]) -> NDArray[np.float64]:
    """Expected cumulative ``r~`` after ``t`` queries of the deterministic test set attack:
    ``E[(t - T + 1)+] / t`` with the first mistake ``T`` geometric with mean ``1/r``, i.e.
    ``1 - (1 - r)(1 - (1 - r)^t) / (r t)``. At ``t = m`` it is :func:`test_set_prediction`
    (to within ``(1 - r)^(m+1) / (r m)``); for ``t`` near ``1/r`` it shows the search for
    the first mistake, where ``(t - 1/r + 1) / t`` would be 0.

    >>> test_set_curve(0.02, np.array([1, 10_000])).round(4).tolist()
    [0.02, 0.9951]
    """
    ts = np.asarray(t, dtype=np.float64)
    if r <= 0:
        return np.zeros(ts.shape)
    if r >= 1:
        return np.ones(ts.shape)
    # -expm1(t log1p(-r)) is 1 - (1 - r)^t without cancellation for small r
    return 1.0 - (1.0 - r) * -np.expm1(ts * np.log1p(-r)) / (r * ts)


def per_input_success(
    defense: Defense,
    pool_x: NDArray[np.float32],
    pool_y: NDArray[np.int64],
    target: int = NO_TARGET,
) -> NDArray[np.float64]:
    """Per pool input, the chance a *fresh* query is answered as the attacker wants,
    under the defense's fixed part (decision and confidence filter; gates ignored)."""
    proba = np.asarray(defense.model.predict_proba(pool_x), dtype=np.float64)
    mechanisms = defense.mechanisms
    sample = next((m for m in mechanisms if isinstance(m, Sample)), None)
    threshold = next((m for m in mechanisms if isinstance(m, ConfidenceThreshold)), None)
    rows = np.arange(len(pool_y))
    if sample is not None:
        p = proba
        if sample.temperature != 1.0:
            logp = np.log(np.clip(p, 1e-300, None)) / sample.temperature
            p = np.exp(logp - logp.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
        if target != NO_TARGET:
            return np.where(pool_y == target, 0.0, p[:, target])
        return 1.0 - p[rows, pool_y]
    label = proba.argmax(axis=1)
    answered = np.ones(len(pool_y), dtype=bool)
    if threshold is not None:
        answered = proba.max(axis=1) >= threshold.min_confidence
    wanted = (label == target) if target != NO_TARGET else (label != pool_y)
    return (wanted & answered).astype(np.float64)


def predict(
    attack: str,
    defense: Defense,
    pool_x: NDArray[np.float32],
    pool_y: NDArray[np.int64],
    m: int,
    target: int = NO_TARGET,
) -> Prediction:
    """The analytic ``r~`` for ``attack`` against ``defense`` on this pool, or NONE."""
    k = defense.n_classes
    memorize = next((mm for mm in defense.mechanisms if isinstance(mm, Memorize)), None)
    stochastic = any(isinstance(mm, Sample) for mm in defense.mechanisms)
    q = per_input_success(defense, pool_x, pool_y, target)
    if target != NO_TARGET:
        q = q[pool_y != target]  # the targeted attacker drops inputs already of the target
    r = float(q.mean()) if len(q) else 0.0
    exact_repeats = attack in ("test-set", "test-set-targeted", "rate-tracking")
    if memorize is not None and exact_repeats:
        if memorize.on_repeat == "abstain":
            return Prediction(r, "<=", "memorization: at most the natural rate", r)
        if attack == "rate-tracking":
            return NONE
        value = 1.0 / k if target != NO_TARGET else (k - 1.0) / k
        return Prediction(value, "repeats", "a uniformly random class on repeats")
    if stochastic:
        if attack == "rate-tracking":
            return Prediction(
                float(q.max()) if len(q) else 0.0, "late", "best per-input error rate"
            )
        return NONE
    if attack == "rate-tracking":
        return Prediction(1.0 if r > 0 else 0.0, "late", "a deterministic mistake, repeated")
    near = next((mm for mm in defense.mechanisms if isinstance(mm, NearRepeat)), None)
    if attack == "noisy-repeat" and near is not None and near.on_repeat == "abstain":
        return Prediction(r, "<=", "approximate memorization: at most r while repeats match", r)
    if attack == "noisy-repeat" and any(mm.role == "filter" for mm in defense.mechanisms):
        # a noisy copy of a confident mistake can fall under a filter's threshold, and the
        # attacker then goes back to exploring: no closed form
        return NONE
    if attack in ("test-set", "test-set-targeted", "noisy-repeat"):
        note = "E[T] = 1/r" if attack != "noisy-repeat" else "noise keeps the mistake (approx.)"
        return Prediction(test_set_prediction(r, m), "=", note, r)
    return NONE
