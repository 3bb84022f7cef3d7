"""What every model file shares: where it came from, its digest, and its input."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.errors import ConfigError, DataError, InputError

__all__ = [
    "OUTPUT_MODES",
    "FileInfo",
    "check_output_mode",
    "file_sha256",
    "fit_input",
    "read_bytes",
]

#: How a model file's output is read: ``auto`` (from the graph where it says), or stated.
OUTPUT_MODES = ("auto", "logits", "probabilities")

#: KServe v2 datatype of each NumPy input dtype a model file may take.
DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.float16): "FP16",
}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, as hex: what an operator compares to know what is deployed.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.bin")
    >>> _ = open(p, "wb").write(b"abc")
    >>> file_sha256(p)[:16]
    'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_bytes(path: Path) -> bytes:
    """The file's bytes; a :class:`DataError` naming the file when it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a model file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None


def check_output_mode(output: str, path: Path) -> str:
    """``output`` if it is one of :data:`OUTPUT_MODES`, else a :class:`ConfigError`."""
    if output not in OUTPUT_MODES:
        raise ConfigError(
            f"{path}: output must be one of {', '.join(OUTPUT_MODES)}, got {output!r}"
        )
    return output


@dataclass(frozen=True)
class FileInfo:
    """Where a model came from and what it takes: shown by ``serve`` and in reports.

    Examples
    --------
    >>> info = FileInfo("m.onnx", "onnx", "ab" * 32, "input", (64,), "FP32", "scores")
    >>> info.describe()
    'onnx file m.onnx (sha256 abababababab...), input input (64,) FP32'
    """

    path: str
    format: str
    sha256: str
    input_name: str
    input_shape: tuple[int, ...]
    datatype: str
    #: What an attack can get from it: "gradients" (torch) or "scores" (a black box).
    access: str

    def describe(self) -> str:
        """One line: format, path, digest prefix and input."""
        return (
            f"{self.format} file {self.path} (sha256 {self.sha256[:12]}...), input "
            f"{self.input_name} {self.input_shape} {self.datatype}"
        )


def fit_input(x: Any, shape: tuple[int, ...], dtype: np.dtype[Any], path: str) -> NDArray[Any]:
    """``x`` as a C-contiguous batch of ``(n, *shape)`` in ``dtype``.

    A batch with the same number of values per row in another layout (flat rows for an
    image model) is reshaped, as the scikit-learn adapter flattens; any other shape is an
    :class:`InputError` naming both shapes.
    """
    arr = np.asarray(x)
    if arr.ndim < 1:
        raise InputError(f"{path}: inputs must be a batch (n, ...), got a scalar")
    width = int(np.prod(shape))
    per_row = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
    if arr.shape[1:] != shape:
        if per_row != width or arr.ndim < 2:
            raise InputError(
                f"{path} takes inputs of shape {shape} ({width} values each), got a batch of "
                f"shape {arr.shape} ({per_row} values each)"
            )
        arr = arr.reshape((len(arr), *shape))
    return np.ascontiguousarray(arr, dtype=dtype)


def check_against(
    info: FileInfo, n_classes: int, data_shape: tuple[int, ...], k: int, dataset: str
) -> None:
    """A model file that does not fit the dataset it is evaluated on is a :class:`ConfigError`
    before any query: the wrong input shape or number of classes, named."""
    width = int(np.prod(info.input_shape))
    if int(np.prod(data_shape)) != width:
        raise ConfigError(
            f"{info.path} takes inputs of shape {info.input_shape} ({width} values) but "
            f"dataset {dataset!r} has inputs of shape {data_shape} "
            f"({int(np.prod(data_shape))} values)"
        )
    if n_classes != k:
        raise ConfigError(
            f"{info.path} answers {n_classes} classes but dataset {dataset!r} has {k}"
        )
