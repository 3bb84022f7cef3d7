"""scikit-learn adapter, with a NumPy fast path for (scaled) logistic regression."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from movingtarget.errors import ConfigError, InputError

__all__ = ["SklearnModel", "softmax"]


def softmax(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-wise softmax, stable for large logits."""
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _linear_params(estimator: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """``(W, b)`` with ``predict_proba(x) == softmax(x @ W.T + b)``, or None.

    Covers a fitted :class:`LogisticRegression` whose probabilities are a softmax
    (binary, or multinomial — not one-vs-rest), optionally behind a
    :class:`StandardScaler` in a :class:`Pipeline`; the scaler is folded into ``W, b``.
    """
    scaler: StandardScaler | None = None
    lr = estimator
    if isinstance(estimator, Pipeline):
        steps = [s for _, s in estimator.steps if s not in (None, "passthrough")]
        if len(steps) == 2 and isinstance(steps[0], StandardScaler):
            scaler, lr = steps
        elif len(steps) == 1:
            lr = steps[0]
        else:
            return None
    if type(lr) is not LogisticRegression or not hasattr(lr, "coef_"):
        return None
    coef = np.asarray(lr.coef_, dtype=np.float64)
    intercept = np.asarray(lr.intercept_, dtype=np.float64).reshape(-1)
    n_cls = len(lr.classes_)
    if n_cls == 2 and coef.shape[0] == 1:
        # P(class 1) = sigmoid(z) = softmax([0, z])[1]
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, intercept[0]])
    elif n_cls > 2:
        multi = getattr(lr, "multi_class", "auto")
        if lr.solver == "liblinear" or multi == "ovr":
            return None  # one-vs-rest probabilities are normalised sigmoids, not a softmax
    else:
        return None
    if scaler is not None:
        mean = np.zeros(coef.shape[1]) if scaler.mean_ is None else scaler.mean_
        scale = np.ones(coef.shape[1]) if scaler.scale_ is None else scaler.scale_
        w = coef / scale
        b = intercept - w @ mean
        return np.ascontiguousarray(w), b
    return np.ascontiguousarray(coef), intercept


class SklearnModel:
    """A :class:`~movingtarget.models.Model` around a fitted scikit-learn classifier.

    Inputs are flattened to ``(n, -1)`` and passed to the estimator as float64; the
    estimator's ``classes_`` (integers in ``[0, n_classes)``) are mapped to their
    columns, so a classifier that never saw some class still answers ``(n, k)``.

    A fitted :class:`~sklearn.linear_model.LogisticRegression` (softmax form), alone
    or behind a :class:`~sklearn.preprocessing.StandardScaler` in a
    :class:`~sklearn.pipeline.Pipeline`, is evaluated directly as
    ``softmax(x @ W.T + b)`` in NumPy: the arena queries models one row at a time and
    scikit-learn's per-call validation would dominate. The fast path is checked
    against the estimator's own ``predict_proba`` when the adapter is built and is
    dropped if they differ by more than 1e-9.

    ``partial_fit(x, y)`` exists only when the estimator (or a pipeline's last step,
    after the fitted earlier steps transform ``x``) supports it, so
    ``isinstance(model, OnlineModel)`` tells the truth.

    Parameters
    ----------
    estimator : fitted scikit-learn classifier with ``predict_proba``
    n_classes : int
        Number of classes ``k`` of the dataset.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
    >>> est = LogisticRegression().fit(x, [0, 0, 2, 2])
    >>> model = SklearnModel(est, n_classes=3)
    >>> model.predict_proba(x).shape, model.fast_path
    ((4, 3), True)
    >>> bool(model.predict_proba(x)[:, 1].max() == 0.0)
    True
    """

    def __init__(self, estimator: Any, n_classes: int) -> None:
        if not hasattr(estimator, "predict_proba"):
            raise ConfigError(f"{type(estimator).__name__} has no predict_proba")
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise ConfigError(f"{type(estimator).__name__} is not fitted (no classes_)")
        classes = np.asarray(classes)
        if (
            classes.dtype.kind not in "iu"
            or classes.min() < 0
            or classes.max() >= n_classes
            or len(np.unique(classes)) != len(classes)
        ):
            raise ConfigError(
                f"estimator classes_ must be distinct integers in [0, {n_classes}), "
                f"got {classes.tolist()}"
            )
        self.estimator = estimator
        self.n_classes = int(n_classes)
        self.n_features: int | None = getattr(estimator, "n_features_in_", None)
        self._columns = classes.astype(np.int64)
        self._all_columns = len(classes) == n_classes and bool(
            (self._columns == np.arange(n_classes)).all()
        )
        self._linear: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
        self._refresh_fast_path()

    # -- fast path ---------------------------------------------------------------

    @property
    def fast_path(self) -> bool:
        """True when predictions use the NumPy linear fast path."""
        return self._linear is not None

    def _refresh_fast_path(self) -> None:
        params = _linear_params(self.estimator)
        self._linear = None
        if params is None or self.n_features is None or params[0].shape[1] != self.n_features:
            return
        probe = np.random.default_rng(0).normal(size=(8, self.n_features))
        scaler = self.estimator[0] if isinstance(self.estimator, Pipeline) else None
        if isinstance(scaler, StandardScaler) and scaler.mean_ is not None:
            probe = probe * (scaler.scale_ if scaler.scale_ is not None else 1.0) + scaler.mean_
        expected = self.estimator.predict_proba(probe)
        got = softmax(probe @ params[0].T + params[1])
        if got.shape == expected.shape and np.abs(got - expected).max() <= 1e-9:
            self._linear = params

    # -- Model protocol ----------------------------------------------------------

    def _flat(self, x: NDArray[Any]) -> NDArray[np.float64]:
        arr = np.asarray(x)
        if arr.ndim < 1:
            raise InputError("inputs must be a batch (n, features...), got a scalar")
        width = math.prod(arr.shape[1:])
        flat = arr.reshape(len(arr), width).astype(np.float64, copy=False)
        if self.n_features is not None and flat.shape[1] != self.n_features:
            raise InputError(
                f"inputs have {flat.shape[1]} features per row, the model expects {self.n_features}"
            )
        return flat

    def predict_proba(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """Class probabilities ``(n, n_classes)``."""
        linear = self._linear
        if (
            linear is not None
            and self._all_columns
            and type(x) is np.ndarray
            and x.ndim == 2
            and x.shape[1] == self.n_features
            and len(x)
        ):
            # the arena's own batches: skip the generic reshaping and checks
            z = x @ linear[0].T  # float32 @ float64 computes in float64
            z += linear[1]
            return softmax(z)
        flat = self._flat(x)
        if len(flat) == 0:  # scikit-learn refuses empty batches
            return np.zeros((0, self.n_classes), dtype=np.float64)
        if self._linear is not None:
            w, b = self._linear
            p = softmax(flat @ w.T + b)
        else:
            p = np.asarray(self.estimator.predict_proba(flat), dtype=np.float64)
        if self._all_columns:
            return p
        out = np.zeros((len(flat), self.n_classes), dtype=np.float64)
        out[:, self._columns] = p
        return out

    # -- online update -----------------------------------------------------------

    def _online_step(self) -> tuple[list[Any], Any] | None:
        """``(fitted transformers, final step)`` when the final step has partial_fit."""
        est = self.estimator
        if isinstance(est, Pipeline):
            steps = [s for _, s in est.steps if s not in (None, "passthrough")]
            if steps and hasattr(steps[-1], "partial_fit"):
                return steps[:-1], steps[-1]
            return None
        if hasattr(est, "partial_fit"):
            return [], est
        return None

    @property
    def partial_fit(self) -> Callable[[NDArray[np.float32], NDArray[np.int64]], None]:
        """Update the estimator with a labeled batch (only when it supports partial_fit)."""
        if self._online_step() is None:
            raise AttributeError(f"{type(self.estimator).__name__} does not support partial_fit")
        return self._partial_fit

    def _partial_fit(self, x: NDArray[np.float32], y: NDArray[np.int64]) -> None:
        step = self._online_step()
        assert step is not None
        transforms, final = step
        flat = self._flat(x)
        labels = np.asarray(y, dtype=np.int64)
        if labels.shape != (len(flat),):
            raise InputError(f"{len(flat)} inputs but labels of shape {labels.shape}")
        if len(flat) == 0:
            return
        if not np.isin(labels, self._columns).all():
            raise InputError(
                f"labels must be among the classes the estimator knows: {self._columns.tolist()}"
            )
        for t in transforms:
            flat = t.transform(flat)
        coef = getattr(final, "coef_", None)
        if isinstance(coef, np.ndarray) and coef.dtype != flat.dtype:
            flat = flat.astype(coef.dtype)  # SGD refuses a dtype other than its fit's
        final.partial_fit(flat, labels, classes=self._columns)
        self._refresh_fast_path()

    def __repr__(self) -> str:
        return f"SklearnModel({self.estimator!r}, n_classes={self.n_classes})"
