"""CIFAR-10 from its "python version" batches (``data_batch_1..5``, ``test_batch``).

The batches are Python pickles. Unpickling can run arbitrary code, so load them only
from a source you trust (the extracted ``cifar-10-python.tar.gz`` from the dataset's
authors). As a second line of defense this reader uses a restricted unpickler that
builds only dicts, lists, strings, numbers and NumPy arrays, and refuses any other
object with a :class:`DataError`.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.datasets.base import Dataset
from movingtarget.datasets.idx import check_limit, read_bytes
from movingtarget.errors import ConfigError, DataError

__all__ = ["CIFAR10_CLASSES", "load_cifar10", "read_cifar_batch"]

#: CIFAR-10's classes, used when ``batches.meta`` is absent.
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = ("test_batch",)

# The only globals a CIFAR batch pickle needs: NumPy's array reconstruction helpers
# (under their NumPy 1 and NumPy 2 module names) and the bytes codec of protocol 2.
_ALLOWED: dict[tuple[str, str], Any] = {("_codecs", "encode"): codecs.encode}
for _np in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_np}.multiarray", "_reconstruct")] = np.ndarray((0,)).__reduce__()[0]
    _ALLOWED[(f"{_np}.multiarray", "scalar")] = np.float64(0).__reduce__()[0]
    _ALLOWED[(f"{_np}.numeric", "_frombuffer")] = np.ndarray((0,)).__reduce_ex__(5)[0]
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype


class _Refused(pickle.UnpicklingError):
    """The pickle names a global outside ``_ALLOWED``."""


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the NumPy array helpers in ``_ALLOWED``."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"refusing to load {module}.{name}") from None


def _unpickle(path: Path) -> Any:
    data = read_bytes(path, "CIFAR batch")
    if not data:
        raise DataError(f"{path}: empty CIFAR batch file")
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as exc:
        raise DataError(f"{path}: not a CIFAR batch pickle ({exc})") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        AttributeError,
    ) as exc:
        raise DataError(
            f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {exc})"
        ) from None


def _field(batch: dict[Any, Any], key: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def read_cifar_batch(path: str | Path) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """One CIFAR-10 batch as float32 images ``(n, 3, 32, 32)`` in ``[0, 1]`` and labels.

    Examples
    --------
    >>> x, y = read_cifar_batch("cifar-10-batches-py/test_batch")  # doctest: +SKIP
    >>> x.shape  # doctest: +SKIP
    (10000, 3, 32, 32)
    """
    p = Path(path).expanduser()
    batch = _unpickle(p)
    if not isinstance(batch, dict):
        raise DataError(f"{p}: a CIFAR batch must be a dict, got {type(batch).__name__}")
    try:
        data = np.asarray(_field(batch, "data"))
        labels = np.asarray(_field(batch, "labels"))
    except KeyError as exc:
        raise DataError(f"{p}: CIFAR batch has no {exc.args[0]!r} field") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{p}: 'data' must be uint8 of shape (n, 3072), got {data.dtype} {data.shape}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{p}: 'labels' must be a list of integers")
    if len(labels) != len(data):
        raise DataError(f"{p}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise DataError(f"{p}: labels must lie in [0, 9]")
    x = data.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)


def _class_names(base: Path) -> tuple[str, ...]:
    meta = base / "batches.meta"
    if not meta.exists():
        return CIFAR10_CLASSES
    obj = _unpickle(meta)
    try:
        names = _field(obj, "label_names") if isinstance(obj, dict) else None
    except KeyError:
        names = None
    if not isinstance(names, list) or len(names) != len(CIFAR10_CLASSES):
        raise DataError(f"{meta}: 'label_names' must be a list of 10 class names")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def load_cifar10(*, root: str | Path, part: str = "all", limit: int | None = None) -> Dataset:
    """CIFAR-10 (Krizhevsky, 2009) from the directory of its python batches.

    ``root`` is the extracted ``cifar-10-batches-py`` directory. ``part`` is
    ``"train"`` (``data_batch_1..5``), ``"test"`` (``test_batch``) or ``"all"`` (train
    then test); ``limit`` keeps the first ``limit`` images. Images are float32
    ``(n, 3, 32, 32)`` in ``[0, 1]``; class names come from ``batches.meta``.

    Only load batches from a trusted source: see the module docstring.

    Examples
    --------
    >>> ds = load_cifar10(root="data/cifar-10-batches-py", part="test")  # doctest: +SKIP
    >>> ds.x.shape, ds.class_names[:2]  # doctest: +SKIP
    ((10000, 3, 32, 32), ('airplane', 'automobile'))
    """
    check_limit(limit)
    parts = {"train": _TRAIN, "test": _TEST, "all": _TRAIN + _TEST}
    if part not in parts:
        raise ConfigError(f"cifar10: part must be one of train, test, all; got {part!r}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"{base}: CIFAR-10 directory not found (pass root=cifar-10-batches-py)")
    xs: list[NDArray[np.float32]] = []
    ys: list[NDArray[np.int64]] = []
    n = 0
    for batch in parts[part]:
        if limit is not None and n >= limit:
            break
        path = base / batch
        if not path.is_file():
            raise DataError(f"{path}: CIFAR-10 batch not found")
        x, y = read_cifar_batch(path)
        xs.append(x)
        ys.append(y)
        n += len(y)
    x_all = np.concatenate(xs)[:limit]
    y_all = np.concatenate(ys)[:limit]
    if len(y_all) == 0:
        raise DataError(f"{base}: the CIFAR-10 batches hold no images")
    return Dataset(
        "cifar10",
        x_all,
        y_all,
        class_names=_class_names(base),
        meta={"root": str(base), "part": part},
    )
