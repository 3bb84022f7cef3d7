"""Analytic predictions of ``r~`` (Goodfellow, 2019) for the attacker the arena runs.

A prediction is made per deployment, from the attacker's own pool (and, for the rate
tracker, its own arms), and says how it compares with the measurement (``kind``):

* ``=``: an expected value. The deterministic test set attack draws its pool without
  replacement, so its first success comes after ``E[T] = (n + 1) / (K + 1)`` queries
  (:class:`~movingtarget.metrics.laws.FirstMistake`); the paper's i.i.d. formula
  ``(m - 1/r + 1) / m`` is kept beside it (``iid``). Exact memorization that abstains
  pays only for fresh mistakes (:class:`~movingtarget.metrics.laws.FreshOnly`):
  ``r / (1 + r)`` while the pool lasts, ``K / m`` once it runs out.
* ``<=``: a bound on the whole run (approximate memorization, a stochastic answer
  behind memorization).
* ``late``: a bound on the second half: the best error rate among the rate tracker's
  arms, approached only as ``m`` grows (the tracker must first find that arm).
* ``repeats``: memorization with a random class: ``1/k`` (targeted) or ``(k-1)/k``
  (untargeted) on repeated queries.

Each carries the variance of one run's comparable measurement where it is known
analytically, so a verdict can use it rather than a small sample's spread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.attacks.base import NO_TARGET, Adversary
from movingtarget.attacks.correlated.rate_tracking import RateTrackingAttack
from movingtarget.attacks.correlated.test_set import NoisyRepeatAttack, TestSetAttack
from movingtarget.defenses.abstain import ConfidenceThreshold
from movingtarget.defenses.base import Defense
from movingtarget.defenses.decision import Argmax, Sample
from movingtarget.defenses.memorize import Memorize
from movingtarget.defenses.near_repeat import NearRepeat
from movingtarget.metrics.laws import FirstMistake, FreshOnly

#: Which measurement each kind speaks of, and whether it is an expected value or a bound.
RELATION = {"=": "=", "<=": "<=", "late": "<=", "repeats": "="}

#: |z| beyond this (in standard errors) is a disagreement between measure and prediction.
Z_MAX = 3.0

#: Fewer expected mistakes than this in the attacker's pool make r~ mostly noise.
FEW_MISTAKES = 5


@dataclass(frozen=True)
class Prediction:
    """A predicted ``r~`` for one deployment and which measurement it is comparable with.

    Examples
    --------
    >>> Prediction(0.9951, "=").measured_key
    'r_tilde'
    >>> Prediction(0.1, "repeats").measured_key, Prediction(0.5, "late").relation
    ('r_tilde_repeats', '<=')
    """

    value: float
    kind: str  # "=", "<=", "late", "repeats", or "" when there is no prediction
    note: str = ""
    #: The chance that a fresh query of the attacker's supply is answered as it wants
    #: (``K / n`` under this defense's fixed part), and what that rate is.
    rate: float = float("nan")
    rate_label: str = ""
    #: Variance of one run's comparable measurement (per query for ``repeats``:
    #: divide by the number of repeats); NaN when not known analytically.
    variance: float = float("nan")
    #: The paper's i.i.d. formula for the same quantity (NaN where it does not apply).
    iid: float = float("nan")
    #: ``n``: the fresh inputs the attacker can send (its pool, or its arms), and ``K``:
    #: how many of them are answered as it wants (expected, for a stochastic answer).
    supply: int = 0
    mistakes: float = float("nan")
    #: ``K`` over the attacker's whole pool (a rate tracker's arms are part of it).
    pool_mistakes: float = float("nan")
    law: Any = field(default=None, repr=False, compare=False)

    @property
    def measured_key(self) -> str:
        """The :class:`~movingtarget.metrics.measured.AttackMetrics` field to compare."""
        return {"late": "r_tilde_late", "repeats": "r_tilde_repeats"}.get(self.kind, "r_tilde")

    @property
    def relation(self) -> str:
        """``=`` (an expected value) or ``<=`` (a bound)."""
        return RELATION.get(self.kind, "")

    def curve(self, t: NDArray[np.integer] | list[int]) -> NDArray[np.float64] | None:
        """The predicted cumulative ``r~`` after ``t`` queries, for each ``t``: the curve
        that the measured cumulative ``r~`` is compared with. ``=``: the law's expected
        curve; ``<=``: the bound, flat; None for ``late`` and ``repeats`` (they speak of
        a part of the run, not of the cumulative curve).

        >>> Prediction(0.02, "<=").curve([1, 10]).tolist()
        [0.02, 0.02]
        >>> Prediction(0.9951, "=", rate=0.02).curve([1, 50, 10_000]).round(4).tolist()
        [0.02, 0.3769, 0.9951]
        """
        ts = np.asarray(t, dtype=np.float64)
        if self.kind == "<=":
            return np.full(ts.shape, self.value)
        if self.kind == "=" and self.law is not None:
            return np.asarray(self.law.curve(np.asarray(t, dtype=np.int64)), dtype=np.float64)
        if self.kind == "=" and not np.isnan(self.rate):
            return test_set_curve(self.rate, ts)
        return None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON), without the law."""
        out = asdict(self)
        out.pop("law")
        return out


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
    proba: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Per pool input, the chance a *fresh* query is answered as the attacker wants,
    under the defense's fixed part (decision and confidence filter; gates ignored).
    ``proba``: the model's probabilities on ``pool_x`` when already computed."""
    if proba is None:
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


_KNOWN = (Argmax, Sample, ConfidenceThreshold, Memorize, NearRepeat)


def _first(defense: Defense, kind: type) -> Any:
    return next((m for m in defense.mechanisms if isinstance(m, kind)), None)


def _rate_label(defense: Defense, target: int, stochastic: bool) -> str:
    what = "sampled" if stochastic else "argmax"
    what = f"{what} answer = target {target}" if target != NO_TARGET else f"{what} error"
    if _first(defense, ConfidenceThreshold) is not None:
        what += ", answered"
    return what


def predict(
    defense: Defense,
    adversary: Adversary,
    m: int,
    *,
    lifetime: int = 0,
    batch: int = 0,
    proba: NDArray[np.float64] | None = None,
) -> Prediction:
    """The analytic ``r~`` of ``adversary`` against ``defense`` over ``m`` queries.

    Made from what this adversary will draw: its pool (a targeted attacker's pool holds
    only inputs not already of the target class), its patience, and a rate tracker's
    arms. ``lifetime`` and ``batch`` are the arena's (a replaced deployment forgets what
    it memorized; batched rounds change how the attacker explores): where they break a
    law's premises the prediction is NONE. ``proba``: the model's probabilities on the
    adversary's pool, when already computed.

    Examples
    --------
    >>> from movingtarget.attacks import TestSetAttack
    >>> from movingtarget.defenses import build_defense
    >>> class Model:                            # wrong on the first 9 of 450 inputs
    ...     n_classes = 2
    ...     def predict_proba(self, x):
    ...         wrong = x[:, 0] < 9
    ...         return np.where(wrong[:, None], [[0.0, 1.0]], [[1.0, 0.0]])
    >>> x = np.arange(450, dtype=np.float32)[:, None]; y = np.zeros(450, np.int64)
    >>> p = predict(build_defense("deterministic", Model()), TestSetAttack(x, y, 2), 400)
    >>> p.kind, round(p.value, 4), round(p.iid, 4), p.supply, p.mistakes
    ('=', 0.8898, 0.8775, 450, 9.0)
    >>> p = predict(build_defense("memorize-abstain", Model()), TestSetAttack(x, y, 2), 400)
    >>> p.kind, round(p.value, 4), round(p.iid, 4)
    ('=', 0.0197, 0.0196)
    """
    if not isinstance(adversary, TestSetAttack | RateTrackingAttack):
        return NONE
    if any(not isinstance(mm, _KNOWN) for mm in defense.mechanisms):
        return NONE  # a rate limit or an unknown mechanism: no closed form here
    pool_x, pool_y, target = adversary.pool_x, adversary.pool_y, adversary.target
    k = defense.n_classes
    memorize = _first(defense, Memorize)
    near = _first(defense, NearRepeat)
    stochastic = _first(defense, Sample) is not None
    q = per_input_success(defense, pool_x, pool_y, target, proba)
    if target != NO_TARGET:
        q = np.where(pool_y == target, 0.0, q)  # an input of the target class is no win
    label = _rate_label(defense, target, stochastic)
    rate_tracking = isinstance(adversary, RateTrackingAttack)
    pool_mistakes = float(q.sum())
    if isinstance(adversary, RateTrackingAttack):
        q = q[adversary.arms]
        label = "best arm: " + label if stochastic else label + ", the tracker's arms"
    else:
        label += ", attacker's pool"
    n, mistakes = len(q), float(q.sum())
    rate = mistakes / n if n else 0.0
    facts: dict[str, Any] = {"rate": rate, "rate_label": label, "supply": n}
    facts["mistakes"] = mistakes
    facts["pool_mistakes"] = pool_mistakes
    noisy = isinstance(adversary, NoisyRepeatAttack)
    remembers = (memorize is not None and not noisy) or near is not None
    if remembers and lifetime:
        return Prediction(float("nan"), "", "the deployment is replaced: memory resets", **facts)
    if batch and not rate_tracking:
        return Prediction(float("nan"), "", "batched rounds: no closed form", **facts)
    if memorize is not None and memorize.on_repeat == "random" and not noisy:
        # any exact repeat gets a uniformly random class, whatever the attack
        p = 1.0 / k if target != NO_TARGET else (k - 1.0) / k
        return Prediction(
            p,
            "repeats",
            "a uniformly random class on repeats",
            variance=p * (1.0 - p),
            iid=p,
            **facts,
        )
    if near is not None and near.on_repeat == "abstain":
        return Prediction(
            rate, "<=", "approximate memorization: at most r while repeats match", **facts
        )
    if memorize is not None and not noisy:
        if stochastic:
            return Prediction(rate, "<=", "memorization: at most the fresh error rate", **facts)
        if rate_tracking:
            # only the sweep is fresh: every later pull repeats an arm and is refused
            swept = float(q[:m].sum())
            return Prediction(
                swept / m,
                "=",
                "memorization: one success per wrong arm (its sweep), over m",
                variance=0.0,
                iid=swept / m,
                **facts,
            )
        patience = int(getattr(adversary, "patience", 1))
        law = FreshOnly(n, round(mistakes), patience)
        note = "memorization: fresh mistakes only; "
        note += "the pool runs out, K/m" if law.runs_out(m) else "r/(1+r) while the pool lasts"
        return Prediction(
            law.mean(m), "=", note, variance=law.variance(m), iid=law.iid_mean(m), law=law, **facts
        )
    if rate_tracking:
        if stochastic:
            best = float(q.max()) if n else 0.0
            note = "best arm's error rate, approached as m grows (asymptotic)"
            return Prediction(best, "late", note, iid=best, **facts)
        if mistakes == 0:
            return Prediction(0.0, "late", "no arm is a mistake", variance=0.0, iid=0.0, **facts)
        return Prediction(1.0, "late", "a deterministic mistake, repeated", iid=1.0, **facts)
    if stochastic:
        return Prediction(float("nan"), "", "no closed form", **facts)
    if noisy and _first(defense, ConfidenceThreshold) is not None:
        # a noisy copy of a confident mistake can fall under a filter's threshold, and the
        # attacker then goes back to exploring: no closed form
        return Prediction(float("nan"), "", "no closed form", **facts)
    first = FirstMistake(n, round(mistakes))
    note = "E[T] = (n+1)/(K+1), drawing without replacement"
    if noisy:
        note = "noise keeps the mistake (approx.); " + note
    return Prediction(
        first.mean(m),
        "=",
        note,
        variance=first.variance(m),
        iid=first.iid_mean(m),
        law=first,
        **facts,
    )


def verdict(
    measured: float,
    predicted: float,
    relation: str,
    se: float,
    *,
    z_max: float = Z_MAX,
) -> tuple[str, float]:
    """Whether a measurement agrees with its prediction: ``(verdict, z)``.

    ``=``: agrees when ``|z| <= z_max``, else disagrees; ``<=`` (a bound): agrees when
    ``z <= z_max``, else ``exceeds`` (a bound that holds only while its premise does,
    such as a fingerprint that still matches, is exceeded where the premise fails);
    ``z = (measured - predicted) / se``. With ``se = 0`` only an exact match agrees;
    without any s.e. there is no verdict (``"—"``).

    >>> verdict(0.95, 0.9, "=", 0.01)
    ('disagrees', 5.0)
    >>> verdict(0.01, 0.02, "<=", 0.001), verdict(0.03, 0.02, "<=", 0.001)
    (('agrees', -10.0), ('exceeds', 10.0))
    >>> verdict(0.0025, 0.0025, "=", 0.0)
    ('agrees', 0.0)
    """
    values = (measured, predicted, se)
    if relation not in ("=", "<=") or any(v is None or np.isnan(v) for v in values[:2]):
        return "—", float("nan")
    diff = measured - predicted
    if se is None or np.isnan(se):
        return "—", float("nan")
    if se <= 0:
        exact = abs(diff) <= 1e-9
        z = 0.0 if exact else float(np.copysign(np.inf, diff))
    else:
        z = diff / se
    ok = abs(z) <= z_max if relation == "=" else z <= z_max
    failed = "disagrees" if relation == "=" else "exceeds"
    return ("agrees" if ok else failed), round(float(z), 6)
