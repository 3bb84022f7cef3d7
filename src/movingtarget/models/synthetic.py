"""A classifier with an exactly chosen natural error rate ``r``, for the analytic regime."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.datasets.base import Split
from movingtarget.errors import ConfigError, InputError

__all__ = ["SyntheticClassifier", "synthetic"]

# Work on at most this many (query, known point) distances at a time.
_CHUNK_CELLS = 1 << 22


def _row_keys(x: NDArray[np.float32]) -> NDArray[np.void]:
    """Each row of a C-contiguous float32 matrix as one opaque byte string (no copy)."""
    return x.view(np.dtype((np.void, x.shape[1] * x.itemsize))).ravel()


class SyntheticClassifier:
    """An oracle classifier that errs on exactly ``round(r * n)`` points of each part.

    It is "fit" on every known point of the split (train and test) and answers them
    as follows, all drawn from ``seed``:

    * exactly ``round(r * n_test)`` test points and ``round(r * n_train)`` train points
      (Python's ``round``), chosen by a seeded permutation, err: their argmax is a
      seeded, uniformly drawn wrong class; every other point gets its true label;
    * each known point gets a confidence ``c ~ U(confidence)``: the answered class
      has probability ``c``, each other class ``(1 - c) / (k - 1)``;
    * any other input takes the answer of its nearest known point (Euclidean
      distance on flattened inputs), so noisy copies of a mistake stay mistakes.

    Identical inputs must share one answer. Where the split holds the same input more
    than once, that input gets the majority label of its copies (ties: the smallest),
    only inputs that occur once are chosen to err, and copies whose label differs
    from the majority count as errors towards ``round(r * n)``. If such unavoidable
    errors exceed ``round(r * n)`` the error is higher than asked (a warning says so).

    The error sets are nested in ``r``: for one seed, a larger ``r`` keeps the earlier
    mistakes (with the same wrong classes and confidences) and adds more.

    Attributes
    ----------
    errs : bool array, ``(n_train + n_test,)``
        Whether each known point (train points, then test points) is answered wrongly.
    labels : int array, ``(n_train + n_test,)``
        The class answered for each known point.

    Examples
    --------
    >>> from movingtarget.datasets import load_digits
    >>> split = load_digits().split(test_size=0.3, seed=0)
    >>> model = SyntheticClassifier(split, r=0.02, seed=1)
    >>> model.n_errors_test, len(split.y_test), round(0.02 * len(split.y_test))
    (11, 539, 11)
    >>> model.natural_error() == model.error_rate(split.x_test, split.y_test) == 11 / 539
    True
    """

    def __init__(
        self,
        split: Split,
        *,
        r: float = 0.02,
        confidence: tuple[float, float] = (0.5, 1.0),
        seed: int = 0,
    ) -> None:
        k = int(split.n_classes)
        if k < 2:
            raise ConfigError(f"synthetic: needs at least 2 classes, got {k}")
        try:
            rate = float(r)
        except (TypeError, ValueError):
            rate = -1.0
        if isinstance(r, bool | str) or not 0.0 <= rate <= 1.0:
            raise ConfigError(f"synthetic: r must be a number in [0, 1], got {r!r}")
        try:
            lo, hi = (float(c) for c in confidence)
        except (TypeError, ValueError):
            raise ConfigError(
                f"synthetic: confidence must be a pair (low, high), got {confidence!r}"
            ) from None
        if not (1.0 / k <= lo <= hi <= 1.0 and hi > 1.0 / k):
            raise ConfigError(
                f"synthetic: confidence must satisfy 1/k <= low <= high <= 1 with high > 1/k "
                f"(k = {k}), got {confidence!r}"
            )
        self.n_classes = k
        self.r = rate
        self.confidence = (lo, hi)
        self.seed = int(seed)
        self.input_shape: tuple[int, ...] = tuple(split.x_train.shape[1:])
        n_train, n_test = len(split.y_train), len(split.y_test)
        self.n_train, self.n_test = n_train, n_test

        known = np.concatenate(
            [split.x_train.reshape(n_train, -1), split.x_test.reshape(n_test, -1)]
        ).astype(np.float32)
        known += np.float32(0.0)  # -0.0 -> +0.0, so equal values have equal bytes
        y = np.concatenate([split.y_train, split.y_test]).astype(np.int64)
        if y.min() < 0 or y.max() >= k:
            raise ConfigError(f"synthetic: labels must lie in [0, {k})")
        is_test = np.zeros(len(y), dtype=bool)
        is_test[n_train:] = True

        # Group identical inputs; groups come out sorted by their bytes.
        uniq, first, inverse, counts = np.unique(
            _row_keys(np.ascontiguousarray(known)),
            return_index=True,
            return_inverse=True,
            return_counts=True,
        )
        inverse = inverse.reshape(-1)
        votes = np.zeros((len(uniq), k), dtype=np.int64)
        np.add.at(votes, (inverse, y), 1)
        group_label = votes.argmax(axis=1)  # majority label; ties -> smallest
        single = counts[inverse] == 1

        g_perm, g_wrong, g_conf = (
            np.random.default_rng(s) for s in np.random.SeedSequence(self.seed).spawn(3)
        )
        shift = g_wrong.integers(1, k, size=len(y))  # wrong class = (y + shift) % k
        u = g_conf.random(len(y))
        conf = hi - (hi - lo) * u  # in (lo, hi]: strictly above 1/k, so argmax is unique
        served = group_label.copy()
        for name, part in (("test", is_test), ("train", ~is_test)):
            idx = np.flatnonzero(part)
            order = g_perm.permutation(idx)
            target = round(self.r * len(idx))
            unavoidable = int((y[idx] != group_label[inverse[idx]]).sum())
            need = target - unavoidable
            if need < 0:
                warnings.warn(
                    f"synthetic: {unavoidable} {name} points share an input with a "
                    f"differently labeled point, more than round(r * n) = {target}; "
                    f"the {name} error is {unavoidable / len(idx):.4f}, not r = {self.r}",
                    stacklevel=2,
                )
            candidates = order[single[order]]
            if need > len(candidates):
                raise ConfigError(
                    f"synthetic: cannot make {target} of {len(idx)} {name} points err "
                    f"(only {len(candidates)} inputs occur once); lower r"
                )
            chosen = candidates[: max(need, 0)]
            served[inverse[chosen]] = (y[chosen] + shift[chosen]) % k

        self._points = np.ascontiguousarray(uniq.view(np.float32).reshape(len(uniq), -1))
        self._sq_norms = np.einsum("ij,ij->i", self._points, self._points, dtype=np.float64)
        self._group_label = served
        self._group_conf = conf[first]
        self.labels: NDArray[np.int64] = served[inverse]
        self.errs: NDArray[np.bool_] = self.labels != y

    # -- reports -------------------------------------------------------------------

    @property
    def errs_train(self) -> NDArray[np.bool_]:
        """Which train points (in split order) are answered wrongly."""
        return self.errs[: self.n_train]

    @property
    def errs_test(self) -> NDArray[np.bool_]:
        """Which test points (in split order) are answered wrongly."""
        return self.errs[self.n_train :]

    @property
    def n_errors_test(self) -> int:
        """Number of test points answered wrongly: ``round(r * n_test)`` by design."""
        return int(self.errs_test.sum())

    def natural_error(self, part: str = "test") -> float:
        """The natural error rate ``r`` on the ``"test"`` (default) or ``"train"`` part."""
        if part == "test":
            return float(self.errs_test.mean())
        if part == "train":
            return float(self.errs_train.mean())
        raise ConfigError(f"part must be 'test' or 'train', got {part!r}")

    def error_rate(self, x: NDArray[np.float32], y: NDArray[np.int64]) -> float:
        """Measured error rate of :meth:`predict` on a labeled batch."""
        return float((self.predict(x) != np.asarray(y)).mean())

    # -- Model protocol ------------------------------------------------------------

    def _lookup(self, x: NDArray[Any]) -> NDArray[np.int64]:
        """Index of the known input each query matches exactly, or its nearest one."""
        arr = np.asarray(x)
        if arr.shape[1:] != self.input_shape:
            raise InputError(
                f"inputs must have shape (n, {', '.join(map(str, self.input_shape))}), "
                f"got {arr.shape}"
            )
        flat = arr.reshape(len(arr), self._points.shape[1])
        q = np.ascontiguousarray(flat, dtype=np.float32) + np.float32(0.0)
        if not np.isfinite(q).all():
            raise InputError("inputs hold NaN or infinite values")
        keys = _row_keys(self._points)
        pos = np.searchsorted(keys, _row_keys(q))
        pos = np.minimum(pos, len(keys) - 1)
        hit = keys[pos] == _row_keys(q)
        out = pos.astype(np.int64)
        miss = np.flatnonzero(~hit)
        if len(miss):
            out[miss] = self._nearest(q[miss])
        return out

    def _nearest(self, q: NDArray[np.float32]) -> NDArray[np.int64]:
        out = np.empty(len(q), dtype=np.int64)
        rows = max(1, _CHUNK_CELLS // len(self._points))
        for start in range(0, len(q), rows):
            chunk = q[start : start + rows]
            # |q - p|^2 = |q|^2 - 2 q.p + |p|^2; |q|^2 does not change the argmin.
            d = self._sq_norms - 2.0 * (chunk @ self._points.T)
            out[start : start + len(chunk)] = d.argmin(axis=1)
        return out

    def predict(self, x: NDArray[np.float32]) -> NDArray[np.int64]:
        """The answered class of each input (the argmax of :meth:`predict_proba`)."""
        return self._group_label[self._lookup(x)]

    def predict_proba(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """``c`` for the answered class, ``(1 - c) / (k - 1)`` for each other class."""
        g = self._lookup(x)
        c = self._group_conf[g]
        out = np.repeat(((1.0 - c) / (self.n_classes - 1))[:, None], self.n_classes, axis=1)
        out[np.arange(len(g)), self._group_label[g]] = c
        return out

    def __repr__(self) -> str:
        return (
            f"SyntheticClassifier(r={self.r}, confidence={self.confidence}, seed={self.seed}, "
            f"n_train={self.n_train}, n_test={self.n_test})"
        )


def synthetic(
    split: Split,
    *,
    seed: int = 0,
    r: float = 0.02,
    confidence: tuple[float, float] = (0.5, 1.0),
) -> SyntheticClassifier:
    """Factory of the ``synthetic`` model: a :class:`SyntheticClassifier` on ``split``."""
    return SyntheticClassifier(split, r=r, confidence=confidence, seed=seed)


# Cheap to rebuild and it stores the whole split: build_model does not cache it.
synthetic.cacheable = False  # type: ignore[attr-defined]
