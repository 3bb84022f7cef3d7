"""Datasets that scikit-learn ships inside its package: no download, no file."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer as _sk_breast_cancer
from sklearn.datasets import load_digits as _sk_digits

from movingtarget.datasets.base import Dataset

__all__ = ["load_breast_cancer", "load_digits"]


def load_digits() -> Dataset:
    """scikit-learn's 8x8 handwritten digits: 1,797 inputs of 64 features in ``[0, 1]``.

    The pixel values (0..16) are divided by 16; the ten classes are ``"0"``..``"9"``.

    Examples
    --------
    >>> ds = load_digits()
    >>> ds.x.shape, ds.x.dtype.name, float(ds.x.max()), ds.n_classes
    ((1797, 64), 'float32', 1.0, 10)
    """
    bunch = _sk_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    names = tuple(str(int(c)) for c in bunch.target_names)
    return Dataset("digits", x, bunch.target.astype(np.int64), class_names=names)


def load_breast_cancer() -> Dataset:
    """scikit-learn's Wisconsin breast-cancer data: 569 inputs of 30 raw float32 features.

    Class 0 is ``malignant``, class 1 ``benign``; the features are not rescaled.

    Examples
    --------
    >>> ds = load_breast_cancer()
    >>> ds.x.shape, ds.class_names
    ((569, 30), ('malignant', 'benign'))
    """
    bunch = _sk_breast_cancer()
    names = tuple(str(c) for c in bunch.target_names)
    return Dataset(
        "breast-cancer",
        bunch.data.astype(np.float32),
        bunch.target.astype(np.int64),
        class_names=names,
    )
