"""Correction memory: answer a labeled input with its label from then on.

Once a labeler (the arena's oracle, the gateway's labeler keys) gives the true class
of a troubling query, later queries with the same exact fingerprint
(``match="exact"``) or a near repeat of it (``match="near"``: the noise-robust band
keys of :class:`~movingtarget.memory.fingerprints.robust.RobustFingerprint`) are answered with
that class, reason ``corrected``. Against the test set attack this ends the
exploitation of a mistake once it is labeled: the repeats stop being wrong.

The mechanism is a gate placed before the decision (and before memorization, so a
corrected repeat is answered rather than refused); it names the reasons that make a
query troubling (``ask_on``), and :meth:`Defense.answer
<movingtarget.defenses.base.Defense.answer>` asks for labels where a query's final
reason is one of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import Reason
from movingtarget.defenses.base import Context
from movingtarget.defenses.labeling import DEFAULT_ASK_ON, parse_ask_on, reason_codes
from movingtarget.errors import ConfigError
from movingtarget.memory.corrections import LabelMemory, LabelTable
from movingtarget.memory.fingerprints.calibration import TARGET_RATE, Calibration, calibrate_robust
from movingtarget.memory.fingerprints.exact import ExactFingerprint
from movingtarget.memory.fingerprints.robust import RobustFingerprint

__all__ = ["MATCHES", "Correct", "LabelTable"]

MATCHES = ("exact", "near")
_CORRECTED = int(Reason.CORRECTED)


class Correct:
    """Gate that answers queries matching a labeled input with its label.

    Parameters
    ----------
    match:
        ``"exact"`` (the exact fingerprint of :class:`Memorize
        <movingtarget.defenses.memorize.Memorize>`) or ``"near"`` (robust band keys, as
        :class:`NearRepeat <movingtarget.defenses.near_repeat.NearRepeat>` uses;
        the width is chosen by :meth:`calibrate` unless ``calibrate_width=False``).
    ask_on:
        The answer reasons that ask for a label, joined by ``+`` in composition text
        (``repeat+low-confidence``) or a list in a config table; default: every flag
        (:data:`~movingtarget.defenses.labeling.DEFAULT_ASK_ON`).
    bands, rows, width, threshold:
        Near only: robust fingerprint settings.
    target_rate:
        Near only: the benign false-match rate :meth:`calibrate` aims for.

    Examples
    --------
    >>> from movingtarget.defenses import Defense, Memorize, Argmax
    >>> class Half:
    ...     n_classes = 2
    ...     def predict_proba(self, x):
    ...         return np.tile([0.3, 0.7], (len(x), 1))
    >>> d = Defense(Half(), [Correct(), Memorize(), Argmax()])
    >>> x = np.zeros((2, 3), np.float32)
    >>> a = d.answer(x); a.labels.tolist(), a.ask.tolist()   # the repeat asks
    ([1, -1], [False, True])
    >>> d.learn(x[:1], np.array([0]))                         # a labeler says class 0
    1
    >>> d.answer(x[:1]).reason_labels()
    ['corrected']
    >>> Correct(match="near", ask_on="near-repeat").describe()
    'correct(match=near, ask_on=near-repeat)'
    """

    role = "gate"

    def __init__(
        self,
        match: str = "exact",
        *,
        ask_on: str | Iterable[str] = DEFAULT_ASK_ON,
        secret: bytes | str | None = None,
        bands: int = 16,
        rows: int = 12,
        width: float = 0.1,
        threshold: int = 1,
        calibrate_width: bool = True,
        target_rate: float = TARGET_RATE,
    ) -> None:
        if match not in MATCHES:
            raise ConfigError(f"correct: match must be one of {MATCHES}, got {match!r}")
        if not 0 < target_rate < 1:
            raise ConfigError(f"correct: target_rate must be in (0, 1), got {target_rate!r}")
        self.match = match
        self.ask_names = parse_ask_on(ask_on, "correct: ask_on")
        #: Reason codes that ask for a label (read by Defense.answer).
        self.ask_on = reason_codes(self.ask_names)
        self.target_rate = float(target_rate)
        self._calibrate_width = bool(calibrate_width)
        self._robust_params: dict[str, Any] = dict(
            bands=bands, rows=rows, threshold=threshold, secret=secret
        )
        self.exact: ExactFingerprint | None = None
        self.robust: RobustFingerprint | None = None
        if match == "exact":
            self.exact = ExactFingerprint(secret)
        else:
            self.robust = RobustFingerprint(width=width, **self._robust_params)
        #: Where the labels live: this process by default; the gateway puts them in its
        #: store (:mod:`movingtarget.memory.corrections`) after calibration.
        self.table: LabelMemory = LabelTable()
        self.calibration: Calibration | None = None
        self.labels_learned = 0

    def _keys(self, x: NDArray[np.float32]) -> NDArray[np.uint64]:
        if self.exact is not None:
            return self.exact.fingerprint(x)
        assert self.robust is not None
        return self.robust.fingerprint(x)

    def learn(
        self, x: NDArray[np.float32], y: NDArray[np.int64], times: NDArray[np.int64] | None = None
    ) -> None:
        """Remember the true classes ``y`` of inputs ``x``."""
        keys = self._keys(x)
        if keys.ndim == 2:  # band keys: each band of an input carries its label
            y = np.repeat(np.asarray(y, np.int64), keys.shape[1])
        self.table.add(keys, y)
        self.labels_learned += len(x)

    def corrections(self, x: NDArray[np.float32], k: int) -> NDArray[np.int64]:
        """The labeled class of each query, -1 where it matches no labeled input."""
        if not len(self.table):
            return np.full(len(x), -1, np.int64)
        found = self.table.lookup(self._keys(x))
        if found.ndim == 1:
            return found
        assert self.robust is not None
        hit = found >= 0
        matched = self.robust.matched(hit)
        if not matched.any():
            return np.full(len(x), -1, np.int64)
        # the class most of the matching bands carry (ties: the smaller class)
        rows, cols = np.nonzero(hit)
        votes = np.zeros((len(x), k), np.int64)
        np.add.at(votes, (rows, found[rows, cols]), 1)
        return np.where(matched, votes.argmax(axis=1), -1)

    def __call__(self, ctx: Context) -> None:
        if not len(self.table):
            return  # nothing labeled yet: not even a fingerprint to compute
        label = self.corrections(ctx.x, ctx.n_classes)
        hit = (label >= 0) & ctx.answers.undecided_mask  # an earlier gate keeps its decision
        if hit.any():
            ctx.answers.labels[hit] = label[hit]
            ctx.answers.reasons[hit] = _CORRECTED

    def calibrate(
        self,
        x_benign: NDArray[np.generic],
        x_heldout: NDArray[np.generic] | None = None,
        *,
        model: Any = None,
        seed: int = 0,
    ) -> Calibration | None:
        """Near only: choose the robust width on benign queries for ``target_rate``
        (labels learned with another width stop matching, so they are forgotten)."""
        if self.robust is None or not self._calibrate_width:
            return None
        fp, cal = calibrate_robust(
            x_benign, x_heldout, target_rate=self.target_rate, seed=seed,
            device=self.robust.device, **self._robust_params,
        )  # fmt: skip
        self.robust, self.calibration = fp, cal
        self.table.clear()
        return cal

    def reset(self) -> None:
        """Forget every label (a new deployment)."""
        self.table.clear()

    def describe(self) -> str:
        parts = [f"match={self.match}"]
        if self.ask_names != DEFAULT_ASK_ON:
            parts.append(f"ask_on={'+'.join(self.ask_names)}")
        return f"correct({', '.join(parts)})"
