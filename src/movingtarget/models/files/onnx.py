"""ONNX model files, run by onnxruntime on the CPU execution provider.

The input's name, shape (after the batch axis) and type are read from the graph, and so
is what the output holds: probabilities when the output is made by a ``Softmax`` node or
is named like ``probabilities`` (as scikit-learn models converted by skl2onnx name it),
else logits (a softmax is applied; log-probabilities read as logits give the same
answer). ``output = "logits"`` or ``"probabilities"`` states it instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget._optional import require
from movingtarget.errors import ConfigError, DataError
from movingtarget.models.files.common import (
    DATATYPES,
    FileInfo,
    check_output_mode,
    fit_input,
    read_bytes,
)

__all__ = ["OnnxModel"]

#: ONNX tensor types onnxruntime reports, as NumPy dtypes.
_TYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
}


def _one_line(exc: Exception) -> str:
    """onnxruntime's message without its status prefix, on one line."""
    text = " ".join(str(exc).split())
    return text.split(" : ", 3)[-1] if text.startswith("[ONNXRuntimeError]") else text


def _producer(graph_bytes: bytes, output: str) -> str | None:
    """The op type of the node that makes ``output``, or None."""
    onnx = require("onnx", "ONNX model files")
    try:
        model = onnx.load_model_from_string(graph_bytes)
    except Exception:  # onnxruntime already parsed it; no graph detail then
        return None
    for node in model.graph.node:
        if output in node.output:
            return str(node.op_type)
    return None


class OnnxModel:
    """A :class:`~movingtarget.models.Model` around an ONNX file (onnxruntime, CPU).

    Parameters
    ----------
    path : str or Path
        The ``.onnx`` file.
    n_classes : int, optional
        Classes ``k``; read from the output's shape when the graph states it.
    input_shape : tuple of int, optional
        Shape of one input, for graphs whose input dimensions (after the batch axis) are
        symbolic.
    output : str
        ``"auto"`` (read from the graph), ``"logits"`` or ``"probabilities"``.
    output_name : str, optional
        Which output holds the scores (default: the only floating-point one, or the one
        named like ``probabilities``).
    threads : int
        onnxruntime's intra-op threads (1: the arena's workers already use every core).

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from movingtarget.datasets import load_digits
    >>> from movingtarget.models import build_model
    >>> from movingtarget.models.export import export_model
    >>> split = load_digits().split(seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "logistic.onnx")
    >>> _ = export_model(build_model("logistic", split, cache_dir=tempfile.mkdtemp()), path,
    ...                  split.x_test[:4])
    >>> model = OnnxModel(path)
    >>> model.n_classes, model.info.input_name, model.info.input_shape, model.output
    (10, 'input', (64,), 'probabilities')
    >>> model.predict_proba(split.x_test[:2]).shape
    (2, 10)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_classes: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        output: str = "auto",
        output_name: str | None = None,
        threads: int = 1,
    ) -> None:
        self.path = Path(path)
        self._options = {
            "n_classes": n_classes,
            "input_shape": input_shape,
            "output": check_output_mode(output, self.path),
            "output_name": output_name,
            "threads": int(threads),
        }
        self._open(read_bytes(self.path))

    def _open(self, blob: bytes) -> None:
        ort = require("onnxruntime", "ONNX model files")
        opts: dict[str, Any] = self._options
        where = str(self.path)
        self._blob = blob
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, opts["threads"])
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # onnxruntime's own warnings are not the user's errors
        try:
            self._session = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a corrupt file or an operator the CPU provider lacks
            message = _one_line(exc)
            unsupported = (
                "NOT_IMPLEMENTED",
                "implementation for",
                "No Op registered",
                "not a registered",
            )
            if any(text in str(exc) for text in unsupported):
                raise DataError(
                    f"{where}: onnxruntime (CPU) does not support an operator of this graph "
                    f"({message}); export it with operators of the standard opsets 7-21"
                ) from None
            raise DataError(f"{where}: not a valid ONNX model ({message})") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise DataError(f"{where}: the graph takes {len(inputs)} inputs ({names}), not one")
        tensor = inputs[0]
        dtype = _TYPES.get(tensor.type)
        if dtype is None:
            raise DataError(
                f"{where}: input {tensor.name!r} is {tensor.type}; only float, double and "
                "float16 inputs are supported"
            )
        self._dtype: np.dtype[Any] = dtype
        self._input = str(tensor.name)
        dims = list(tensor.shape)
        batch = dims[0] if dims else None
        if isinstance(batch, int) and batch > 1:
            raise DataError(
                f"{where}: the graph takes batches of exactly {batch}; export it with a "
                "dynamic batch axis (or a batch of 1)"
            )
        #: Rows per run: a graph with a fixed batch of 1 is asked one row at a time.
        self._rows = 1 if batch == 1 else 0
        stated = opts["input_shape"]
        rest = dims[1:]
        if stated is not None:
            shape = tuple(int(s) for s in stated)
            fixed = [d for d in rest if isinstance(d, int) and d > 0]
            if len(fixed) == len(rest) and tuple(fixed) != shape:
                raise ConfigError(
                    f"{where}: input_shape {shape} does not match the graph's input "
                    f"{tensor.name!r} of shape {tuple(fixed)}"
                )
        elif all(isinstance(d, int) and d > 0 for d in rest) and rest:
            shape = tuple(int(d) for d in rest)
        else:
            raise ConfigError(
                f"{where}: the graph's input {tensor.name!r} has shape {dims}, with symbolic "
                "sizes after the batch axis: state input_shape (--input-shape 1,28,28)"
            )
        self.input_shape: tuple[int, ...] = shape
        out = self._pick_output(where)
        self._output = out.name
        k = out.shape[-1] if out.shape else None
        if isinstance(k, int) and k > 0:
            if opts["n_classes"] is not None and int(opts["n_classes"]) != k:
                raise ConfigError(
                    f"{where}: n_classes = {opts['n_classes']} but output {out.name!r} has {k}"
                )
            self.n_classes = int(k)
        elif opts["n_classes"] is not None:
            self.n_classes = int(opts["n_classes"])
        else:
            raise ConfigError(
                f"{where}: the output {out.name!r} does not state its number of classes: set "
                "n_classes"
            )
        if self.n_classes < 2:
            raise DataError(f"{where}: output {out.name!r} has {self.n_classes} class(es)")
        mode = opts["output"]
        self._inferred = mode == "auto"
        if mode == "auto":
            op = _producer(blob, out.name)
            named = "prob" in out.name.lower()
            mode = "probabilities" if op == "Softmax" or named else "logits"
        #: How the output is read: "logits" (softmax applied) or "probabilities".
        self.output: str = mode
        self.info = FileInfo(
            where,
            "onnx",
            hashlib.sha256(blob).hexdigest(),
            tensor.name,
            self.input_shape,
            DATATYPES[dtype],
            "scores",
        )
        self._probe()

    def _pick_output(self, where: str) -> Any:
        outputs = self._session.get_outputs()
        wanted = self._options["output_name"]
        if wanted is not None:
            for o in outputs:
                if o.name == wanted:
                    return o
            names = ", ".join(o.name for o in outputs)
            raise ConfigError(f"{where}: no output {wanted!r} (the graph has: {names})")
        floats = [o for o in outputs if o.type in _TYPES]
        if not floats:
            kinds = ", ".join(f"{o.name} ({o.type})" for o in outputs)
            hint = (
                " (a scikit-learn model converted with a ZipMap: convert with "
                "options={'zipmap': False})"
                if any("seq" in o.type or "map" in o.type for o in outputs)
                else ""
            )
            raise DataError(f"{where}: no floating-point output of scores: {kinds}{hint}")
        named = [o for o in floats if "prob" in o.name.lower()]
        if len(floats) > 1 and len(named) != 1:
            names = ", ".join(o.name for o in floats)
            raise ConfigError(f"{where}: several outputs ({names}): state output_name")
        return named[0] if len(floats) > 1 else floats[0]

    def _probe(self) -> None:
        """Run the graph once on a zero input: a graph that fails to run, or whose output
        reads as the other kind than inferred, fails here with one message, not on the
        first query."""
        zero = np.zeros((1, *self.input_shape), dtype=self._dtype)
        raw = self._run(zero)
        if self._inferred and self.output == "logits":
            looks = raw.min() >= 0 and abs(float(raw.sum()) - 1.0) < 1e-6
            if looks:
                raise ConfigError(
                    f"{self.path}: output {self._output!r} looks like probabilities, not "
                    "logits: state output = 'probabilities' (or 'logits' if it is)"
                )

    def _run(self, x: NDArray[Any]) -> NDArray[np.float64]:
        def once(batch: NDArray[Any]) -> NDArray[np.float64]:
            try:
                (out,) = self._session.run([self._output], {self._input: batch})
            except Exception as exc:  # a graph that fails on its own declared input
                raise DataError(f"{self.path}: onnxruntime failed: {_one_line(exc)}") from None
            return np.asarray(out, dtype=np.float64).reshape(len(batch), -1)

        if self._rows == 1 and len(x) != 1:
            if not len(x):
                return np.empty((0, self.n_classes))
            return np.concatenate([once(x[i : i + 1]) for i in range(len(x))])
        return once(x)

    def predict_proba(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """Class probabilities, ``(n, n_classes)`` float64."""
        arr = fit_input(x, self.input_shape, self._dtype, str(self.path))
        if not len(arr):
            return np.empty((0, self.n_classes))
        out = self._run(arr)
        if out.shape[1] != self.n_classes:
            raise DataError(
                f"{self.path}: output {self._output!r} has {out.shape[1]} columns, "
                f"expected {self.n_classes}"
            )
        if self.output == "logits":
            out = np.exp(out - out.max(axis=1, keepdims=True))
            out /= out.sum(axis=1, keepdims=True)
            return out
        sums = out.sum(axis=1)
        if out.min() < -1e-6 or np.abs(sums - 1.0).max() > 1e-4:
            raise DataError(
                f"{self.path}: output {self._output!r} is not probabilities (a row sums to "
                f"{float(sums[np.abs(sums - 1.0).argmax()]):.4g}): state output = 'logits'"
            )
        return out / sums[:, None]  # float32 rows, renormalized in float64

    def __getstate__(self) -> dict[str, Any]:
        # an onnxruntime session does not pickle; the graph's bytes rebuild it
        state = self.__dict__.copy()
        state.pop("_session", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open(self._blob)

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, n_classes={self.n_classes}, output={self.output!r})"
