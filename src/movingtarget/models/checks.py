"""Checks every model must pass (after river's ``checks``): run them on any new model.

Examples
--------
>>> from movingtarget.datasets import load_digits
>>> from movingtarget.models import build_model
>>> split = load_digits().split(seed=0)
>>> model = build_model("synthetic", split)
>>> check_model(model, split.x_test[:20]).shape
(20, 10)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from movingtarget.models.base import Model, OnlineModel

__all__ = ["check_model", "check_online_model"]


def _fail(model: Model, message: str) -> None:
    raise AssertionError(f"{type(model).__name__}: {message}")


def check_model(
    model: Model,
    x: NDArray[np.float32],
    *,
    atol: float = 1e-6,
    batch_atol: float = 1e-5,
    n_single: int = 8,
) -> NDArray[np.float64]:
    """Assert that ``model`` honours the :class:`Model` protocol on the batch ``x``.

    * ``predict_proba(x)`` has shape ``(n, k)``, is finite and non-negative, and each
      row sums to one within ``atol``;
    * an empty batch gives shape ``(0, k)``;
    * a row's answer does not depend on its batch: the first ``n_single`` rows asked
      one at a time, and the whole batch asked in reverse order, give the same rows
      (within ``batch_atol``; floating-point kernels may differ by batch size) and
      the same argmax wherever the top two classes are more than ``batch_atol`` apart.

    Returns the probabilities; raises :class:`AssertionError` naming the failure.
    """
    if not isinstance(model, Model):
        _fail(model, "does not implement predict_proba and n_classes")
    n, k = len(x), int(model.n_classes)
    p = np.asarray(model.predict_proba(x))
    if p.shape != (n, k):
        _fail(model, f"predict_proba returned shape {p.shape}, expected {(n, k)}")
    if not np.isfinite(p).all():
        _fail(model, "predict_proba returned NaN or infinite values")
    if (p < -atol).any():
        _fail(model, f"predict_proba returned a negative probability {p.min()}")
    sums = p.sum(axis=1)
    if n and np.abs(sums - 1.0).max() > atol:
        _fail(model, f"rows sum to {sums.min()}..{sums.max()}, not 1 (atol {atol})")
    top2 = np.sort(p, axis=1)[:, -2:] if k >= 2 else np.zeros((n, 2))
    clear = (top2[:, 1] - top2[:, 0]) > batch_atol

    def same(rows: NDArray[np.int64], q: NDArray[np.float64], how: str) -> None:
        diff = np.abs(q - p[rows]).max() if len(rows) else 0.0
        if diff > batch_atol:
            _fail(model, f"{how}: answers differ from the batch answers by {diff}")
        flipped = clear[rows] & (q.argmax(axis=1) != p[rows].argmax(axis=1))
        if flipped.any():
            _fail(model, f"{how}: argmax changed for row {int(rows[flipped][0])}")

    empty = np.asarray(model.predict_proba(x[:0]))
    if empty.shape != (0, k):
        _fail(model, f"an empty batch gave shape {empty.shape}, expected {(0, k)}")
    for i in range(min(n, n_single)):
        same(np.array([i]), np.asarray(model.predict_proba(x[i : i + 1])), f"row {i} alone")
    if n > 1:
        rev = np.arange(n)[::-1].copy()
        same(rev, np.asarray(model.predict_proba(x[rev])), "reversed batch")
    return p


def check_online_model(
    model: OnlineModel, x: NDArray[np.float32], y: NDArray[np.int64]
) -> NDArray[np.float64]:
    """:func:`check_model` after one ``partial_fit(x, y)``; returns the new probabilities."""
    if not isinstance(model, OnlineModel):
        _fail(model, "has no partial_fit")
    model.partial_fit(x, y)
    return check_model(model, x)
