"""Decision mechanisms: the model's own answer for every query still undecided."""

from __future__ import annotations

import numpy as np

from movingtarget.answers import MODEL
from movingtarget.defenses.base import Context
from movingtarget.errors import ConfigError


class Argmax:
    """Deterministic: the most probable class.

    Examples
    --------
    >>> Argmax().describe()
    'argmax'
    """

    role = "decision"

    def __call__(self, ctx: Context) -> None:
        open_ = ctx.answers.undecided_mask
        if open_.all():
            ctx.answers.labels[:] = ctx.proba.argmax(axis=1)
            ctx.answers.reasons[:] = MODEL
        else:
            ctx.answers.labels[open_] = ctx.proba[open_].argmax(axis=1)
            ctx.answers.reasons[open_] = MODEL

    def reset(self) -> None:
        """Stateless."""

    def describe(self) -> str:
        return "argmax"


class Sample:
    """Stochastic: a class sampled from the model's probabilities at ``temperature``.

    Temperature 1 samples from ``p`` itself; lower sharpens toward argmax.

    Examples
    --------
    >>> Sample(temperature=0.5).describe()
    'sample(temperature=0.5)'
    """

    role = "decision"

    def __init__(self, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise ConfigError(f"sample: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, ctx: Context) -> None:
        open_ = ctx.answers.undecided_mask
        every = bool(open_.all())
        p = ctx.proba if every else ctx.proba[open_]
        if self.temperature != 1.0:
            logp = np.log(np.clip(p, 1e-300, None)) / self.temperature
            p = np.exp(logp - logp.max(axis=1, keepdims=True))
        cdf = np.cumsum(p, axis=1)
        u = ctx.rng.random(len(p)) * cdf[:, -1]
        labels = np.minimum((cdf < u[:, None]).sum(axis=1), p.shape[1] - 1)
        if every:
            ctx.answers.labels[:] = labels
            ctx.answers.reasons[:] = MODEL
        else:
            ctx.answers.labels[open_] = labels
            ctx.answers.reasons[open_] = MODEL

    def reset(self) -> None:
        """Stateless (the defense owns the random generator)."""

    def describe(self) -> str:
        return f"sample(temperature={self.temperature:g})"
