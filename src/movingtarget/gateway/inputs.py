"""Input validation: client JSON to a float32 batch of the model's input shape, or a
400 that says exactly what is wrong. Nothing malformed reaches the defense or memory."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.gateway.problems import Problem, bad_request

#: KServe v2 datatypes the gateway accepts as numeric input tensors.
NUMERIC_DATATYPES = {
    "FP16",
    "FP32",
    "FP64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
}


def _numeric(data: Any, what: str) -> NDArray[Any]:
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # numpy refuses ragged nesting ("inhomogeneous shape"): name it plainly
        msg = str(exc).split(";")[0].split(". ")[0]
        raise bad_request(f"{what} is not a rectangular array of numbers ({msg})") from None
    # booleans read as 0 and 1 (JSON mixes of numbers and booleans do anyway)
    if arr.dtype.kind not in "biuf":
        found = {"U": "text", "S": "text", "O": "mixed or non-numeric values"}
        raise bad_request(
            f"{what} must hold only numbers, found {found.get(arr.dtype.kind, arr.dtype.name)}"
        )
    return arr


def _finite(x: NDArray[np.float32], what: str) -> NDArray[np.float32]:
    if x.size and not math.isfinite(float(x.sum(dtype=np.float64))):
        raise bad_request(f"{what} hold NaN or infinite values (or values beyond float32)")
    return x


def batch_from_json(
    inputs: list[Any], input_shape: tuple[int, ...], max_inputs: int
) -> NDArray[np.float32]:
    """``inputs`` (a list of nested lists) as float32 ``(n, *input_shape)``.

    >>> batch_from_json([[1, 2], [3, 4]], (2,), 10).shape
    (2, 2)
    >>> batch_from_json([[1, 2]], (3,), 10)
    Traceback (most recent call last):
    ...
    movingtarget.gateway.problems.Problem: each input must have shape [3], got [2]
    """
    if not inputs:
        raise bad_request("'inputs' is empty; send at least one input")
    if len(inputs) > max_inputs:
        raise Problem(
            413,
            "too-many-inputs",
            f"{len(inputs)} inputs in one request; the limit is {max_inputs}",
        )
    arr = _numeric(inputs, "'inputs'")
    if arr.shape[1:] != input_shape:
        raise bad_request(
            f"each input must have shape {list(input_shape)}, got {list(arr.shape[1:])}"
        )
    with np.errstate(over="ignore"):  # values beyond float32 become inf: refused below
        x = arr.astype(np.float32)
    return _finite(x, "inputs")


def batch_from_tensor(
    data: list[Any],
    shape: list[int],
    datatype: str,
    input_shape: tuple[int, ...],
    max_inputs: int,
) -> NDArray[np.float32]:
    """A KServe v2 input tensor (flat or nested ``data`` of ``shape``) as float32
    ``(n, *input_shape)``; ``shape`` is ``[n, *input_shape]``."""
    if datatype not in NUMERIC_DATATYPES:
        raise bad_request(
            f"datatype {datatype!r} is not accepted; use one of {sorted(NUMERIC_DATATYPES)}"
        )
    if len(shape) != 1 + len(input_shape) or list(shape[1:]) != list(input_shape):
        raise bad_request(
            f"input shape must be [n, {', '.join(map(str, input_shape))}], got {shape}"
        )
    n = shape[0]
    if n < 1:
        raise bad_request(f"the batch size (shape[0]) must be >= 1, got {n}")
    if n > max_inputs:
        raise Problem(
            413, "too-many-inputs", f"{n} inputs in one request; the limit is {max_inputs}"
        )
    arr = _numeric(data, "'data'")
    if arr.size != n * math.prod(input_shape):
        raise bad_request(
            f"'data' holds {arr.size} values; shape {shape} needs {n * math.prod(input_shape)}"
        )
    if datatype.startswith(("INT", "UINT")) and arr.dtype.kind == "f":
        raise bad_request(f"datatype {datatype} needs integers, 'data' holds fractions")
    with np.errstate(over="ignore"):
        x = arr.astype(np.float32).reshape(n, *input_shape)
    return _finite(x, "inputs")
