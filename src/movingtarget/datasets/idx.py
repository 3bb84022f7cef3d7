"""MNIST-style IDX files (plain or gzip) and the Fashion-MNIST dataset built on them.

The IDX format (LeCun et al.) is a 4-byte magic number ``0x00 0x00 <type> <ndim>``,
``ndim`` big-endian 32-bit dimension sizes, then the values in C order, big-endian.
This module also holds the small file helpers the other readers share.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from movingtarget.datasets.base import Dataset
from movingtarget.errors import ConfigError, DataError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "load_fashion_mnist",
    "load_idx",
    "read_idx",
]

#: Where the Debian package ``dataset-fashion-mnist`` installs its files.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"

#: Fashion-MNIST's ten classes, in label order.
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# IDX type code -> big-endian numpy dtype.
_IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------- helpers


def require_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a :class:`Path`; a :class:`DataError` if it is not a readable file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: {what} not found")
    if not p.is_file():
        raise DataError(f"{p}: {what} is not a regular file")
    return p


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    """All bytes of ``path``, decompressed if it is gzip (detected by its magic bytes)."""
    p = require_file(path, what)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(
            f"{p}: truncated gzip file (it ends before the end of the stream)"
        ) from None
    except (OSError, zlib.error) as exc:
        raise DataError(f"{p}: corrupt gzip file ({exc})") from None


def check_finite(x: NDArray[np.floating], where: str) -> None:
    """A :class:`DataError` naming the first row of ``x`` with a NaN or infinite value."""
    finite = np.isfinite(x)
    if finite.all():
        return
    bad_rows = ~finite.reshape(len(x), -1).all(axis=1)
    row = int(np.flatnonzero(bad_rows)[0])
    raise DataError(f"{where}: row {row} holds NaN or infinite values")


def check_limit(limit: int | None) -> None:
    """A :class:`ConfigError` unless ``limit`` is None or a positive integer."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")


# --------------------------------------------------------------------------- IDX


def read_idx(path: str | Path) -> NDArray[np.generic]:
    """Read one IDX file (plain or gzip) into an array of its own dtype and shape.

    Every header field is checked: the magic number, the type code, the dimension
    count, and that the file holds exactly the number of values the header declares.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    >>> _ = p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    >>> read_idx(p).tolist()
    [7, 8, 9]
    """
    p = Path(path).expanduser()
    data = read_bytes(p, "IDX file")
    if len(data) == 0:
        raise DataError(f"{p}: empty IDX file")
    if len(data) < 4:
        raise DataError(f"{p}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(
            f"{p}: bad IDX magic number 0x{magic:08x} (expected 0x0000 then a type code "
            "and a dimension count); is this an IDX file?"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02x}" for c in _IDX_TYPES)
        raise DataError(f"{p}: unknown IDX type code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise DataError(f"{p}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{p}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need {header})"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{p}: size mismatch: header declares shape {shape} of {dtype.name} "
            f"({expected} bytes with the header) but the file holds {len(data)} bytes ({kind})"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _images_to_float(images: NDArray[np.generic], where: str) -> NDArray[np.float32]:
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if images.dtype.kind == "f":
        x = images.astype(np.float32)
        check_finite(x, where)
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise DataError(f"{where}: float images must lie in [0, 1]")
        return x
    raise DataError(
        f"{where}: images must be unsigned bytes (type 0x08) or floats, got {images.dtype.name}"
    )


def _idx_pair(
    images: str | Path, labels: str | Path, limit: int | None
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    img = read_idx(images)
    lab = read_idx(labels)
    if img.ndim != 3:
        raise DataError(f"{images}: images must have 3 dimensions (n, H, W), got shape {img.shape}")
    if lab.ndim != 1:
        raise DataError(f"{labels}: labels must have 1 dimension (n,), got shape {lab.shape}")
    if lab.dtype.kind not in "iu":
        raise DataError(f"{labels}: labels must be integers, got {lab.dtype.name}")
    if len(lab) != len(img):
        raise DataError(f"{labels}: {len(lab)} labels but {images} holds {len(img)} images")
    if len(img) == 0:
        raise DataError(f"{images}: no images (the header declares n = 0)")
    if lab.min() < 0:
        raise DataError(f"{labels}: negative label {int(lab.min())}")
    if limit is not None:
        img, lab = img[:limit], lab[:limit]
    x = _images_to_float(img, str(images))[:, None, :, :]
    return np.ascontiguousarray(x), lab.astype(np.int64)


def load_idx(
    images: str | Path,
    labels: str | Path,
    *,
    limit: int | None = None,
    name: str | None = None,
    class_names: tuple[str, ...] = (),
) -> Dataset:
    """A dataset from an IDX image file and an IDX label file (plain or gzip).

    Images come back as float32 of shape ``(n, 1, H, W)`` in ``[0, 1]`` (unsigned
    bytes are divided by 255); ``limit`` keeps the first ``limit`` examples.

    Examples
    --------
    >>> ds = load_idx(  # doctest: +SKIP
    ...     "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
    ...     "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
    ...     limit=100,
    ... )
    >>> ds.x.shape  # doctest: +SKIP
    (100, 1, 28, 28)
    """
    check_limit(limit)
    x, y = _idx_pair(images, labels, limit)
    if name is None:
        stem = Path(images).name
        name = stem[:-3] if stem.endswith(".gz") else stem
    return Dataset(name, x, y, class_names=class_names, meta={"images": str(images)})


def load_fashion_mnist(
    *, root: str | Path = FASHION_MNIST_ROOT, part: str = "all", limit: int | None = None
) -> Dataset:
    """Fashion-MNIST (Xiao et al., 2017): 28x28 grey images of clothes, ten classes.

    ``part`` is ``"train"`` (60,000), ``"test"`` (10,000) or ``"all"`` (train then
    test, 70,000); ``limit`` keeps the first ``limit`` of those (deterministic).
    Reads the IDX files under ``root`` (the Debian package ``dataset-fashion-mnist``
    installs them in ``/usr/share/datasets/fashion-mnist``); never downloads.

    Examples
    --------
    >>> ds = load_fashion_mnist(part="test", limit=500)  # doctest: +SKIP
    >>> ds.x.shape, ds.class_names[0]  # doctest: +SKIP
    ((500, 1, 28, 28), 'T-shirt/top')
    """
    check_limit(limit)
    parts = {"train": ("train",), "test": ("t10k",), "all": ("train", "t10k")}
    if part not in parts:
        raise ConfigError(f"fashion-mnist: part must be one of train, test, all; got {part!r}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(
            f"{base}: Fashion-MNIST directory not found "
            "(install the Debian package dataset-fashion-mnist, or pass root=...)"
        )
    xs: list[NDArray[np.float32]] = []
    ys: list[NDArray[np.int64]] = []
    left = limit
    for prefix in parts[part]:
        if left is not None and left <= 0:
            break
        images = _find(base, f"{prefix}-images-idx3-ubyte")
        labels = _find(base, f"{prefix}-labels-idx1-ubyte")
        x, y = _idx_pair(images, labels, left)
        xs.append(x)
        ys.append(y)
        if left is not None:
            left -= len(y)
    x_all = xs[0] if len(xs) == 1 else np.concatenate(xs)
    y_all = ys[0] if len(ys) == 1 else np.concatenate(ys)
    if y_all.max() >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{base}: label {int(y_all.max())} out of range for Fashion-MNIST")
    return Dataset(
        "fashion-mnist",
        x_all,
        y_all,
        class_names=FASHION_MNIST_CLASSES,
        meta={"root": str(base), "part": part},
    )


def _find(base: Path, stem: str) -> Path:
    """``base/stem.gz`` or ``base/stem``, whichever exists (gzip preferred)."""
    for candidate in (base / f"{stem}.gz", base / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{base / stem}[.gz]: Fashion-MNIST file not found")
