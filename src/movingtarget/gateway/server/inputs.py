"""Input validation: client JSON to a float32 batch of the model's input shape, or a
400 that says exactly what is wrong; then the model's input domain (:class:`InputDomain`):
values outside it are refused (422) or clipped. Nothing malformed reaches the defense or
memory."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
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


def _check_tensor(
    shape: list[int], datatype: str, input_shape: tuple[int, ...], max_inputs: int
) -> int:
    """The batch size of a tensor of ``shape`` and ``datatype``, or a Problem."""
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
    return int(n)


def batch_from_binary(
    raw: bytes,
    shape: list[int],
    datatype: str,
    input_shape: tuple[int, ...],
    max_inputs: int,
    where: str = "inputs[0]",
) -> NDArray[np.float32]:
    """A tensor sent with the binary tensor extension (``raw``: its values little-endian,
    row-major) as float32 ``(n, *input_shape)``; BOOL is one byte per value, 0 or 1.

    >>> batch_from_binary(np.array([1, 2], "<i4").tobytes(), [1, 2], "INT32", (2,), 4)
    array([[1., 2.]], dtype=float32)
    >>> batch_from_binary(b"\\x00" * 3, [1, 2], "INT8", (2,), 4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    movingtarget.gateway.problems.Problem: inputs[0]: 3 bytes of binary data; ... needs 2
    """
    n = _check_tensor(shape, datatype, input_shape, max_inputs)
    if datatype.startswith("FP"):
        dtype = np.dtype(f"<f{int(datatype[2:]) // 8}")
    else:
        dtype = np.dtype("u1" if datatype == "BOOL" else datatype.lower()).newbyteorder("<")
    need = n * math.prod(input_shape) * dtype.itemsize
    if len(raw) != need:
        raise bad_request(
            f"{where}: {len(raw)} bytes of binary data; shape {shape} of {datatype} needs {need}"
        )
    values = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and values.size and values.max() > 1:
        raise bad_request(f"{where}: a BOOL byte must be 0 or 1, got {int(values.max())}")
    with np.errstate(over="ignore"):
        x = values.astype(np.float32).reshape(n, *input_shape)
    return _finite(x, "inputs")


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
    n = _check_tensor(shape, datatype, input_shape, max_inputs)
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


#: What the gateway does with an input outside the model's input domain.
OUT_OF_DOMAIN_MODES = ("refuse", "clip", "off")


def _num(value: float) -> str:
    return f"{value:.6g}"


@dataclass(frozen=True)
class InputDomain:
    """The values a served model expects: ``lo <= x <= hi`` feature by feature (``lo``
    and ``hi`` broadcast against one input; 0-d for one range for every feature).

    >>> dom = InputDomain(np.array(0, np.float32), np.array(1, np.float32), "--input-range")
    >>> dom.apply(np.array([[0.5, 2.0]], np.float32), "clip", "inputs")
    (array([[0.5, 1. ]], dtype=float32), 1)
    >>> dom.apply(np.array([[0.5, 16]], np.float32), "refuse", "inputs")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    movingtarget.gateway.problems.Problem: inputs[0][1] = 16 is outside ... [0, 1] for feature 1
    """

    lo: NDArray[np.float32]
    hi: NDArray[np.float32]
    source: str

    def bounds(self, input_shape: tuple[int, ...]) -> tuple[list[float], list[float]]:
        """``lo`` and ``hi`` of every feature, flat (for metadata)."""
        lo = np.broadcast_to(self.lo, input_shape).ravel()
        hi = np.broadcast_to(self.hi, input_shape).ravel()
        return lo.astype(float).tolist(), hi.astype(float).tolist()

    def apply(
        self, x: NDArray[np.float32], mode: str, where: str
    ) -> tuple[NDArray[np.float32], int]:
        """``x`` (a finite batch) as ``mode`` wants it, and how many inputs were clipped:
        ``refuse`` raises a 422 naming the first value outside (``where`` names the batch
        in the message), ``clip`` clips to the domain, ``off`` leaves ``x`` as it is."""
        if mode == "off":
            return x, 0
        outside = (x < self.lo) | (x > self.hi)
        rows = outside.reshape(len(x), -1).any(axis=1)
        if not rows.any():
            return x, 0
        if mode == "clip":
            return np.clip(x, self.lo, self.hi).astype(np.float32), int(rows.sum())
        i = int(np.flatnonzero(rows)[0])
        feature = int(np.flatnonzero(outside[i].ravel())[0])
        index = np.unravel_index(feature, x.shape[1:])
        lo = float(np.broadcast_to(self.lo, x.shape[1:]).ravel()[feature])
        hi = float(np.broadcast_to(self.hi, x.shape[1:]).ravel()[feature])
        value = float(x[i].ravel()[feature])
        path = f"{where}[{i}]" + "".join(f"[{k}]" for k in index)
        raise Problem(
            422,
            "out-of-domain",
            f"{path} = {_num(value)} is outside the model's input domain "
            f"[{_num(lo)}, {_num(hi)}] for feature {feature}",
        )
