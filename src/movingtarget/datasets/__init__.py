"""The datasets box: arrays plus labels and metadata, by name.

Every dataset is a function registered in :data:`DATASETS` under the name configs and
the command line use; :func:`load_dataset` calls it with keyword parameters.

Examples
--------
>>> ds = load_dataset("digits")
>>> ds.name, ds.x.shape, ds.n_classes
('digits', (1797, 64), 10)
>>> load_dataset("digitz")
Traceback (most recent call last):
...
movingtarget.errors.ConfigError: unknown dataset 'digitz' (did you mean 'digits'?); ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from movingtarget.datasets.base import Dataset, Split
from movingtarget.datasets.builtin import load_breast_cancer, load_digits
from movingtarget.datasets.cifar import load_cifar10
from movingtarget.datasets.idx import load_fashion_mnist, load_idx, read_idx
from movingtarget.datasets.tabular import load_csv, load_npz, load_spambase
from movingtarget.errors import ConfigError, DataError
from movingtarget.registry import Registry

__all__ = [
    "DATASETS",
    "Dataset",
    "Split",
    "load_breast_cancer",
    "load_cifar10",
    "load_csv",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_idx",
    "load_npz",
    "load_spambase",
    "read_idx",
]

#: Dataset name -> loader. Register a new one with ``@DATASETS.register("name")``.
DATASETS: Registry[Dataset] = Registry("dataset", "movingtarget.datasets")

DATASETS.register("digits")(load_digits)
DATASETS.register("breast-cancer")(load_breast_cancer)
DATASETS.register("idx")(load_idx)
DATASETS.register("fashion-mnist")(load_fashion_mnist)
DATASETS.register("csv")(load_csv)
DATASETS.register("spambase")(load_spambase)
DATASETS.register("npz")(load_npz)
DATASETS.register("cifar10")(load_cifar10)


def load_dataset(name: str, **params: Any) -> Dataset:
    """Load the dataset registered as ``name`` with keyword ``params``.

    An unknown name or parameter raises :class:`~movingtarget.errors.ConfigError`; a
    missing, corrupt or invalid file raises :class:`~movingtarget.errors.DataError`; a
    missing one also names the setting that gives its path.

    >>> load_dataset("csv", path="/no/such.csv")
    Traceback (most recent call last):
    ...
    movingtarget.errors.DataError: /no/such.csv: CSV file not found (set by ...
    """
    try:
        dataset = DATASETS.create(name, **params)
    except DataError as exc:
        for key in ("path", "root", "images", "labels"):
            value = params.get(key)
            if isinstance(value, str | Path) and not Path(value).expanduser().exists():
                raise DataError(
                    f"{exc} (set by the dataset's {key!r}: dataset.{key} in a config, "
                    f"--set dataset.{key}=PATH on the command line)"
                ) from None
        raise
    if not isinstance(dataset, Dataset):  # a user's module:attribute factory, or a plugin's
        raise ConfigError(f"dataset {name!r} returned {type(dataset).__name__}, not a Dataset")
    return dataset
