"""The model protocol: ``predict_proba(x) -> (n, k)``, optionally ``partial_fit``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray


@runtime_checkable
class Model(Protocol):
    """Anything that maps a batch of inputs to class probabilities.

    ``predict_proba`` takes ``(n, *input_shape)`` float32 and returns ``(n, k)`` float
    rows that sum to one. Models must be deterministic: the same input gives the same
    row, whatever else is in the batch.

    Examples
    --------
    >>> class Constant:
    ...     n_classes = 2
    ...     def predict_proba(self, x):
    ...         return np.tile([0.25, 0.75], (len(x), 1))
    >>> isinstance(Constant(), Model)
    True
    """

    n_classes: int

    def predict_proba(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """Class probabilities for each input."""
        ...


@runtime_checkable
class OnlineModel(Model, Protocol):
    """A model that can learn from labeled queries after deployment.

    Examples
    --------
    >>> from sklearn.linear_model import SGDClassifier
    >>> from movingtarget.models import SklearnModel
    >>> x = np.array([[0.0], [1.0]], np.float32); y = np.array([0, 1])
    >>> model = SklearnModel(SGDClassifier(loss="log_loss").fit(x, y), n_classes=2)
    >>> isinstance(model, OnlineModel)
    True
    """

    def partial_fit(self, x: NDArray[np.float32], y: NDArray[np.int64]) -> None:
        """Update the model with labeled inputs."""
        ...


def is_online(model: object) -> bool:
    """Whether ``model`` can learn from labels now: it has ``partial_fit`` and, if it
    says (a pool of members: ``online``), all of it can learn.

    >>> from movingtarget.models.pool import ModelPool
    >>> class Fixed:
    ...     n_classes = 2
    ...     def predict_proba(self, x): return np.tile([0.5, 0.5], (len(x), 1))
    >>> is_online(ModelPool([Fixed()]))     # a pool whose members cannot learn
    False
    """
    return isinstance(model, OnlineModel) and bool(getattr(model, "online", True))
