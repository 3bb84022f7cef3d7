"""Datasets: arrays plus labels and metadata, with deterministic seeded splits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from movingtarget.errors import DataError


@dataclass(frozen=True)
class Split:
    """A train/test split of one dataset (test is the attacker's and benign pool).

    Examples
    --------
    >>> from movingtarget.datasets import load_dataset
    >>> split = load_dataset("digits").split(test_size=0.5, seed=0)
    >>> split.input_shape, split.n_classes
    ((64,), 10)
    """

    name: str
    x_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.int64]
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input (without the batch axis)."""
        return tuple(self.x_train.shape[1:])


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (float32, ``(n, *shape)``) with integer labels ``y`` in ``[0, k)``.

    Examples
    --------
    >>> import numpy as np
    >>> ds = Dataset("toy", np.zeros((10, 2), np.float32), np.arange(10) % 2)
    >>> ds.n_classes, ds.input_shape
    (2, (2,))
    >>> s = ds.split(test_size=0.2, seed=0)
    >>> len(s.y_test)
    2
    """

    name: str
    x: NDArray[np.float32]
    y: NDArray[np.int64]
    class_names: tuple[str, ...] = field(default=())
    meta: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        x = np.asarray(self.x)
        y = np.asarray(self.y)
        if x.ndim < 2:
            raise DataError(
                f"dataset {self.name!r}: inputs must be (n, features...), got {x.shape}"
            )
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(
                f"dataset {self.name!r}: {x.shape[0]} inputs but labels of shape {y.shape}"
            )
        if x.shape[0] == 0:
            raise DataError(f"dataset {self.name!r} is empty")
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"dataset {self.name!r}: inputs are not numeric ({x.dtype})")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            bad = int(np.argwhere(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0, 0])
            raise DataError(f"dataset {self.name!r}: input {bad} holds NaN or infinite values")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"dataset {self.name!r}: labels must be integers, got {y.dtype}")
        if y.min() < 0:
            raise DataError(f"dataset {self.name!r}: labels must be >= 0")
        object.__setattr__(self, "x", np.ascontiguousarray(x))
        object.__setattr__(self, "y", y.astype(np.int64, copy=False))
        if not self.class_names:
            k = int(y.max()) + 1
            object.__setattr__(self, "class_names", tuple(str(i) for i in range(k)))

    @property
    def n_classes(self) -> int:
        """Number of classes ``k``."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input."""
        return tuple(self.x.shape[1:])

    def split(self, test_size: float = 0.3, seed: int = 0) -> Split:
        """A stratified split; the same ``seed`` always gives the same split."""
        if not 0.0 < test_size < 1.0:
            raise DataError(f"test_size must be in (0, 1), got {test_size}")
        rng = np.random.default_rng(seed)
        test_idx: list[NDArray[np.int64]] = []
        for c in range(self.n_classes):
            idx = np.flatnonzero(self.y == c)
            rng.shuffle(idx)
            n_test = round(len(idx) * test_size)
            test_idx.append(idx[:n_test])
        test = np.sort(np.concatenate(test_idx)) if test_idx else np.array([], np.int64)
        mask = np.ones(len(self.y), dtype=bool)
        mask[test] = False
        if mask.sum() == 0 or len(test) == 0:
            raise DataError(f"dataset {self.name!r} is too small to split")
        return Split(
            name=self.name,
            x_train=self.x[mask],
            y_train=self.y[mask],
            x_test=self.x[test],
            y_test=self.y[test],
            n_classes=self.n_classes,
        )
