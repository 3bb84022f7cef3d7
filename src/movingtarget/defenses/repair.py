"""Gated online update: learn from labels, but never at the cost of a canary set.

Labels that reach a defense (:meth:`Defense.learn
<movingtarget.defenses.base.Defense.learn>`) can also update the model itself
(``partial_fit``), so a labeled mistake moves the decision boundary and its
neighbours stop being mistakes too. Labels can lie: an attacker who can label
(a poisoning attempt) would teach the model wrong classes. So every update is
gated: the model's accuracy on a held-out benign **canary set** is measured before
and after; an update that drops it by more than ``tolerance`` is rolled back. Every
update leaves a :class:`RepairRecord` (before/after canary accuracy, accepted or
rolled back) in ``Defense.repairs``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.defenses.labeling import DEFAULT_ASK_ON, parse_ask_on, reason_codes
from movingtarget.errors import ConfigError
from movingtarget.models.base import Model, is_online


@dataclass(frozen=True)
class RepairRecord:
    """One gated update: how many labels, canary accuracy before and after, and
    whether the update was kept.

    Examples
    --------
    >>> RepairRecord(labels=3, before=0.9, after=0.5, accepted=False).drop
    0.4
    """

    labels: int
    before: float
    after: float
    accepted: bool

    @property
    def drop(self) -> float:
        """Canary accuracy lost by the update (negative: gained)."""
        return round(self.before - self.after, 12)


def check_tolerance(tolerance: object, where: str) -> float:
    """``tolerance`` as a float in ``[0, 1]``; a :class:`ConfigError` naming ``where``.

    >>> check_tolerance(0.02, "refresh")
    0.02
    >>> check_tolerance(2, "refresh")
    Traceback (most recent call last):
    movingtarget.errors.ConfigError: refresh: tolerance must be in [0, 1], got 2
    """
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, int | float)
        or not 0 <= tolerance <= 1
    ):
        raise ConfigError(f"{where}: tolerance must be in [0, 1], got {tolerance!r}")
    return float(tolerance)


class Canary:
    """A held-out benign canary set, and the accuracy a change to a model may lose on it.

    :class:`GatedUpdate` and the continual refresh
    (:class:`~movingtarget.defenses.refresh.Refresh`) measure a model here before and
    after they change it, and keep the change only if :meth:`holds`.

    Parameters
    ----------
    x, y:
        Held-out benign inputs and their classes (at least one).
    tolerance:
        The accuracy a change may lose and still be kept, in ``[0, 1]``.
    where:
        Who uses it, for error messages (``update``, ``refresh``).

    Examples
    --------
    >>> class Zero:
    ...     n_classes = 2
    ...     def predict_proba(self, x): return np.tile([1.0, 0.0], (len(x), 1))
    >>> canary = Canary(np.zeros((4, 1), np.float32), [0, 0, 0, 1], tolerance=0.1)
    >>> canary.accuracy(Zero()), canary.holds(0.75, 0.7), canary.holds(0.75, 0.6)
    (0.75, True, False)
    """

    def __init__(
        self,
        x: NDArray[np.generic],
        y: NDArray[np.integer] | Iterable[int],
        *,
        tolerance: float = 0.01,
        where: str = "update",
    ) -> None:
        self.x = np.asarray(x, np.float32)
        self.y = np.asarray(list(y), np.int64)
        if len(self.y) == 0 or self.y.shape != (len(self.x),):
            raise ConfigError(
                f"{where}: canary needs one class per input and at least one input, got "
                f"{len(self.x)} inputs and labels of shape {self.y.shape}"
            )
        self.tolerance = check_tolerance(tolerance, where)

    def accuracy(self, model: Model) -> float:
        """The model's accuracy on the canary set."""
        guess = np.asarray(model.predict_proba(self.x)).argmax(axis=1)
        return float((guess == self.y).mean())

    def holds(self, before: float, after: float) -> bool:
        """Whether a change from accuracy ``before`` to ``after`` may be kept."""
        return after >= before - self.tolerance


class GatedUpdate:
    """Update an online model on labels, rolling back what hurts a canary set.

    Parameters
    ----------
    canary_x, canary_y:
        Held-out benign inputs and their classes (not the model's training data, and
        not what the labeler sees).
    tolerance:
        The canary accuracy an update may lose and still be kept (``0.01``: one point).
    steps:
        ``partial_fit`` passes over each labeled batch.
    ask_on:
        The reasons that ask for labels (as :class:`~movingtarget.defenses.correct.Correct`).

    Examples
    --------
    >>> from sklearn.linear_model import SGDClassifier
    >>> from movingtarget.models import SklearnModel
    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32); y = np.array([0, 0, 1, 1])
    >>> model = SklearnModel(SGDClassifier(loss="log_loss", random_state=0).fit(x, y), 2)
    >>> gate = GatedUpdate(x, y, tolerance=0.0, steps=20)
    >>> gate.update(model, x, 1 - y).accepted            # wrong labels: rolled back
    False
    >>> model.predict_proba(x).argmax(axis=1).tolist()   # the model as it was
    [0, 0, 1, 1]
    """

    def __init__(
        self,
        canary_x: NDArray[np.generic],
        canary_y: NDArray[np.integer] | Iterable[int],
        *,
        tolerance: float = 0.01,
        steps: int = 1,
        ask_on: str | Iterable[str] = DEFAULT_ASK_ON,
    ) -> None:
        self.canary = Canary(canary_x, canary_y, tolerance=tolerance, where="update")
        self.canary_x, self.canary_y = self.canary.x, self.canary.y
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"update: steps must be an integer >= 1, got {steps!r}")
        self.tolerance, self.steps = self.canary.tolerance, int(steps)
        self.ask_names = parse_ask_on(ask_on, "update: ask_on")
        self.ask_on = reason_codes(self.ask_names)
        self._deployed: dict[str, Any] | None = None  # the model before any update

    def check(self, model: Model) -> None:
        """Refuse a model that cannot learn (:class:`ConfigError`)."""
        if not is_online(model):
            raise ConfigError(
                f"update: the model ({type(model).__name__}) has no partial_fit; use an "
                "online model (mlp, torch-mlp, cnn, or an estimator with partial_fit)"
            )

    def accuracy(self, model: Model) -> float:
        """The model's accuracy on the canary set."""
        return self.canary.accuracy(model)

    def update(self, model: Model, x: NDArray[np.float32], y: NDArray[np.int64]) -> RepairRecord:
        """One gated update on a labeled batch; the model is changed in place or not at all."""
        self.check(model)
        before = self.accuracy(model)
        snapshot = copy.deepcopy(vars(model))  # a rollback restores exactly this
        if self._deployed is None:  # its own copy: a rollback hands `snapshot` to the model
            self._deployed = copy.deepcopy(snapshot)
        for _ in range(self.steps):
            model.partial_fit(x, y)  # type: ignore[attr-defined]
        after = self.accuracy(model)
        accepted = self.canary.holds(before, after)
        if not accepted:
            _restore(model, snapshot)
        return RepairRecord(labels=len(y), before=before, after=after, accepted=accepted)

    def restore(self, model: Model) -> None:
        """Put the model back as it was deployed (before any update): a new deployment."""
        if self._deployed is not None:
            _restore(model, copy.deepcopy(self._deployed))
            self._deployed = None

    def describe(self) -> str:
        """``update(tolerance=..., steps=...)``."""
        return f"update(tolerance={self.tolerance:g}, steps={self.steps})"


def _restore(model: Model, state: dict[str, Any]) -> None:
    vars(model).clear()
    vars(model).update(state)
