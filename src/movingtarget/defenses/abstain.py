"""Fixed abstention: decline to answer when the model is unsure."""

from __future__ import annotations

from movingtarget.answers import ABSTAIN, MODEL, Reason
from movingtarget.defenses.base import Context
from movingtarget.errors import ConfigError

_LOW_CONFIDENCE = int(Reason.LOW_CONFIDENCE)


class ConfidenceThreshold:
    """ABSTAIN on model answers whose top probability is below ``min_confidence``.

    A filter: it runs after the decision and only touches answers the model gave.

    Examples
    --------
    >>> ConfidenceThreshold(0.9).describe()
    'threshold(min_confidence=0.9)'
    """

    role = "filter"

    def __init__(self, min_confidence: float = 0.9) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ConfigError(f"threshold: min_confidence must be in [0, 1], got {min_confidence}")
        self.min_confidence = float(min_confidence)

    def __call__(self, ctx: Context) -> None:
        unsure = (ctx.answers.reasons == MODEL) & (ctx.proba.max(axis=1) < self.min_confidence)
        if unsure.any():
            ctx.answers.labels[unsure] = ABSTAIN
            ctx.answers.reasons[unsure] = _LOW_CONFIDENCE

    def reset(self) -> None:
        """Stateless."""

    def describe(self) -> str:
        return f"threshold(min_confidence={self.min_confidence:g})"
