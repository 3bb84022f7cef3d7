"""Tabular readers: CSV with a header row (Spambase is one) and NumPy ``.npz`` archives."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from movingtarget.datasets.base import Dataset
from movingtarget.datasets.idx import check_finite, read_bytes, require_file
from movingtarget.errors import ConfigError, DataError

__all__ = ["load_csv", "load_npz", "load_spambase"]


def load_csv(
    path: str | Path,
    *,
    label_column: str | int | None = None,
    name: str | None = None,
) -> Dataset:
    """A dataset from a CSV file with a header row (plain or gzip).

    Every column except the label column is a numeric feature. ``label_column`` is a
    header name or a column index (negative counts from the end); the default is the
    last column. String labels are mapped to the indices of their sorted unique values
    (which become the class names); integer labels are kept as they are.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "toy.csv"
    >>> _ = p.write_text("a,b,kind\\n1,2,cat\\n3,4,dog\\n5,6,cat\\n")
    >>> ds = load_csv(p)
    >>> ds.x.shape, ds.y.tolist(), ds.class_names
    ((3, 2), [0, 1, 0], ('cat', 'dog'))
    """
    p = require_file(path, "CSV file")
    try:
        text = read_bytes(p, "CSV file").decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as exc:
        raise DataError(f"{p}: malformed CSV ({exc})") from None
    if not rows:
        raise DataError(f"{p}: empty CSV file (no header row)")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise DataError(f"{p}: CSV file has a header but no data rows")
    if len(header) < 2:
        raise DataError(f"{p}: CSV needs at least one feature column and a label column")
    width = len(header)
    for i, row in enumerate(body):
        if len(row) != width:
            raise DataError(f"{p}: line {i + 2} has {len(row)} fields but the header has {width}")
    label_idx = _label_index(p, header, label_column)
    feature_idx = [j for j in range(width) if j != label_idx]
    cells = np.array(body, dtype=object)
    x = _parse_features(p, cells[:, feature_idx], [header[j] for j in feature_idx])
    y, class_names = _parse_labels(p, cells[:, label_idx], header[label_idx])
    return Dataset(
        name or p.name.removesuffix(".gz").removesuffix(".csv"),
        x,
        y,
        class_names=class_names,
        meta={"path": str(p), "label_column": header[label_idx]},
    )


def _label_index(p: Path, header: list[str], label_column: str | int | None) -> int:
    if label_column is None:
        return len(header) - 1
    if isinstance(label_column, bool):
        raise ConfigError(f"label_column must be a column name or index, got {label_column!r}")
    if isinstance(label_column, int):
        if not -len(header) <= label_column < len(header):
            raise DataError(
                f"{p}: label_column {label_column} out of range ({len(header)} columns)"
            )
        return label_column % len(header)
    if label_column not in header:
        raise DataError(
            f"{p}: no column named {label_column!r} (columns: {', '.join(header[:8])}"
            f"{', ...' if len(header) > 8 else ''})"
        )
    return header.index(label_column)


def _parse_features(p: Path, cells: NDArray[np.object_], names: list[str]) -> NDArray[np.float32]:
    try:
        x = cells.astype(np.float64)
    except ValueError:
        # Find the first bad cell only on the error path (a Python loop is fine here).
        for i, row in enumerate(cells):
            for j, cell in enumerate(row):
                try:
                    float(cell)
                except ValueError:
                    raise DataError(
                        f"{p}: line {i + 2}, column {names[j]!r}: non-numeric value {cell!r}"
                    ) from None
        raise  # pragma: no cover - astype failed, yet every cell parses
    if not np.isfinite(x).all():
        i, j = (int(v) for v in np.argwhere(~np.isfinite(x))[0])
        raise DataError(f"{p}: line {i + 2}, column {names[j]!r}: NaN or infinite value")
    return x.astype(np.float32)


def _parse_labels(
    p: Path, cells: NDArray[np.object_], column: str
) -> tuple[NDArray[np.int64], tuple[str, ...]]:
    values = np.array([str(c).strip() for c in cells])
    if (values == "").any():
        i = int(np.flatnonzero(values == "")[0])
        raise DataError(f"{p}: line {i + 2}, column {column!r}: empty label")
    try:
        numeric = values.astype(np.float64)
    except ValueError:
        names, y = np.unique(values, return_inverse=True)
        return y.astype(np.int64), tuple(str(n) for n in names)
    if not np.isfinite(numeric).all() or (numeric != np.round(numeric)).any():
        i = int(np.flatnonzero(~np.isfinite(numeric) | (numeric != np.round(numeric)))[0])
        raise DataError(
            f"{p}: line {i + 2}, column {column!r}: numeric labels must be whole numbers, "
            f"got {values[i]!r}"
        )
    if numeric.min() < 0:
        i = int(np.argmin(numeric))
        raise DataError(f"{p}: line {i + 2}, column {column!r}: negative label {values[i]!r}")
    return numeric.astype(np.int64), ()


#: SHA-256 of the Spambase CSV the package ships (before gzip), checked on every load.
SPAMBASE_SHA256 = "118eb7ac6537494ccbff79fed03ec084f9f435b6e80fe7834fe8b6eee6d7253e"


def shipped_spambase() -> Path:
    """The path of the gzipped Spambase CSV inside the installed package."""
    return Path(str(resources.files("movingtarget.datasets") / "data" / "spambase.csv.gz"))


def load_spambase(path: str | Path | None = None) -> Dataset:
    """UCI Spambase (Hopkins et al., 1999): 4,601 e-mails, 57 features, spam or not.

    A CSV with a header row whose last column ``type`` is ``spam`` or ``nonspam``;
    class 0 is ``nonspam``, class 1 is ``spam``. With no ``path`` the copy shipped in
    the package is read (UCI Spambase, CC BY 4.0) and checked against its SHA-256, so
    a damaged install is an error rather than a silently different dataset.

    Examples
    --------
    >>> ds = load_spambase()
    >>> ds.x.shape, ds.class_names
    ((4601, 57), ('nonspam', 'spam'))
    """
    if path is not None:
        return load_csv(path, label_column="type", name="spambase")
    shipped = shipped_spambase()
    digest = hashlib.sha256(read_bytes(shipped, "shipped Spambase file")).hexdigest()
    if digest != SPAMBASE_SHA256:
        raise DataError(
            f"{shipped}: the shipped Spambase data is damaged (SHA-256 {digest}, expected "
            f"{SPAMBASE_SHA256}); reinstall movingtarget"
        )
    return load_csv(shipped, label_column="type", name="spambase")


def load_npz(
    path: str | Path,
    *,
    x_key: str = "x",
    y_key: str = "y",
    name: str | None = None,
) -> Dataset:
    """A dataset from a NumPy ``.npz`` archive holding inputs ``x`` and labels ``y``.

    ``x`` is any numeric array ``(n, ...)``; ``y`` holds ``n`` non-negative integer
    labels. Pickled object arrays are refused (``allow_pickle=False``).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "toy.npz"
    >>> np.savez(p, x=np.eye(4), y=np.array([0, 1, 1, 0]))
    >>> load_npz(p).x.shape
    (4, 4)
    """
    p = require_file(path, "npz file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty npz file")
    try:
        archive = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{p}: not a readable npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{p}: a single .npy array, not an npz archive with {x_key!r} and {y_key!r}"
        )
    with archive:
        keys = list(archive.files)
        for key in (x_key, y_key):
            if key not in keys:
                raise DataError(
                    f"{p}: missing key {key!r} (the archive holds: {', '.join(keys) or 'nothing'})"
                )
        try:
            x = archive[x_key]
            y = archive[y_key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{p}: cannot read arrays ({exc})") from None
    if x.ndim < 2:
        raise DataError(f"{p}: {x_key!r} must have shape (n, features...), got {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{p}: {y_key!r} must have shape (n,), got {y.shape}")
    if len(y) != len(x):
        raise DataError(f"{p}: {len(x)} inputs in {x_key!r} but {len(y)} labels in {y_key!r}")
    if len(x) == 0:
        raise DataError(f"{p}: {x_key!r} holds no inputs")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{p}: {x_key!r} must be numeric, got dtype {x.dtype}")
    x32 = x.astype(np.float32)
    check_finite(x32, f"{p}: {x_key!r}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise DataError(f"{p}: {y_key!r} must hold whole-number labels")
    elif y.dtype.kind not in "iu":
        raise DataError(f"{p}: {y_key!r} must hold integer labels, got dtype {y.dtype}")
    if y.min() < 0:
        raise DataError(f"{p}: {y_key!r} holds a negative label ({y.min()})")
    return Dataset(
        name or p.name.removesuffix(".npz"),
        x32,
        y.astype(np.int64),
        meta={"path": str(p)},
    )
