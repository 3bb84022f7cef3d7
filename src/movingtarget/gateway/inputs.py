"""Input validation: client JSON to a float32 batch of the model's input shape, or a
400 that says exactly what is wrong. Nothing malformed reaches the defense or memory."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.gateway.problems import Problem, bad_request

#: KServe v2 datatypes the gateway accepts as input tensors (BOOL reads as 0 and 1).
NUMERIC_DATATYPES = {
    "BOOL",
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


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _float_fits(value: Any) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _typed(values: NDArray[Any], datatype: str, where: str) -> NDArray[np.float32]:
    """``values`` (an object array of JSON numbers and booleans) as float32, each checked
    against ``datatype``: BOOL holds booleans, the others numbers; an integer datatype
    holds integers within its range, FP16 and FP32 values within theirs."""
    flat = values.ravel()
    types = set(map(type, flat))
    if datatype == "BOOL":
        if types - {bool}:
            bad = next(v for v in flat if type(v) is not bool)
            raise bad_request(f"{where}: {_show(bad)} is not a boolean (datatype BOOL)")
        return values.astype(np.float32)
    if bool in types:
        bad = next(v for v in flat if type(v) is bool)
        raise bad_request(f"{where}: {_show(bad)} is not a number (datatype {datatype})")
    if datatype.startswith(("INT", "UINT")):
        if float in types:
            bad = next(v for v in flat if type(v) is float)
            raise bad_request(f"{where}: {_show(bad)} is not an integer (datatype {datatype})")
        info = np.iinfo(datatype.lower())
        lo, hi = int(info.min), int(info.max)
        if flat.size and not (lo <= min(flat) and max(flat) <= hi):
            bad = next(v for v in flat if not lo <= v <= hi)
            raise bad_request(f"{where}: {_show(bad)} does not fit {datatype} [{lo}, {hi}]")
        return values.astype(np.float32)
    ftype = np.dtype(f"float{datatype[2:]}")
    top = f"{float(np.finfo(ftype).max):.8g}"
    try:
        wide = values.astype(np.float64)
    except OverflowError:  # an integer literal beyond float64
        bad = next(v for v in flat if not _float_fits(v))
        raise bad_request(
            f"{where}: {_show(bad)} does not fit {datatype} [-{top}, {top}]"
        ) from None
    with np.errstate(over="ignore", invalid="ignore"):
        overflow = np.isfinite(wide) & ~np.isfinite(wide.astype(ftype))
    if overflow.any():
        bad = flat[int(np.flatnonzero(overflow.ravel())[0])]
        raise bad_request(f"{where}: {_show(bad)} does not fit {datatype} [-{top}, {top}]")
    with np.errstate(over="ignore"):  # values beyond float32 (FP64): refused by _finite
        return wide.astype(np.float32)


def batch_from_tensor(
    data: list[Any],
    shape: list[int],
    datatype: str,
    input_shape: tuple[int, ...],
    max_inputs: int,
    where: str = "inputs[0]",
) -> NDArray[np.float32]:
    """A KServe v2 input tensor (flat or nested ``data`` of ``shape``) as float32
    ``(n, *input_shape)``; ``shape`` is ``[n, *input_shape]``. Every value must be of the
    declared ``datatype`` and fit it (``where`` names the tensor in messages).

    >>> batch_from_tensor([1, 1000], [1, 2], "INT8", (2,), 10)
    Traceback (most recent call last):
    ...
    movingtarget.gateway.problems.Problem: inputs[0].data: 1000 does not fit INT8 [-128, 127]
    """
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
    # the JSON values themselves (numpy would read true as 1, and 2**63 beside -1 as a float)
    try:
        values: NDArray[Any] | None = np.asarray(data, dtype=object)
    except (ValueError, TypeError, RecursionError):
        values = None
    if values is None or set(map(type, values.ravel())) - {int, float, bool}:
        _numeric(data, "'data'")  # says what is wrong: ragged, text, null, ...
        raise bad_request("'data' must be a rectangular array of numbers")
    if values.size != n * math.prod(input_shape):
        raise bad_request(
            f"'data' holds {values.size} values; shape {shape} needs {n * math.prod(input_shape)}"
        )
    x = _typed(values, datatype, f"{where}.data").reshape(n, *input_shape)
    return _finite(x, "inputs")
