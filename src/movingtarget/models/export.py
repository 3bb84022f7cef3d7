"""Write a model as a file another runtime can run: ONNX, TorchScript, torch.export, skops.

``export_model(model, path, sample)`` picks the format by the suffix of ``path``:

* ``.onnx``: a PyTorch model through torch's TorchScript-based exporter
  (``torch.onnx.export(..., dynamo=False)``: it needs no onnxscript and runs offline),
  outputs named ``logits``; a scikit-learn model through skl2onnx, outputs
  ``probabilities`` (no ZipMap). The batch axis is dynamic.
* ``.pt``: a PyTorch model as TorchScript (``torch.jit.script``, else traced on
  ``sample``); ``.pt2``: as a ``torch.export`` program with a dynamic batch axis.
* ``.skops``: a scikit-learn model's estimator, with skops.

:func:`movingtarget.models.files.load_model_file` reads each back; the tests check that
every round trip gives the same argmax and probabilities within 1e-5.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget._optional import require
from movingtarget.errors import ConfigError
from movingtarget.models.base import Model
from movingtarget.models.sklearn import SklearnModel
from movingtarget.models.torch import TorchModel

__all__ = ["EXPORT_SUFFIXES", "export_model"]

#: What each kind of model can be written as.
EXPORT_SUFFIXES = {"torch": (".onnx", ".pt", ".pt2"), "sklearn": (".onnx", ".skops")}

#: The ONNX opset written (onnxruntime 1.17+ runs it; skl2onnx and torch both support it).
OPSET = 17


def _kind(model: Model) -> str:
    if isinstance(model, TorchModel):
        return "torch"
    if isinstance(model, SklearnModel):
        return "sklearn"
    raise ConfigError(
        f"cannot export a {type(model).__name__}: only PyTorch and scikit-learn models "
        "(logistic, mlp, cnn, torch-mlp, ...) can be written as files"
    )


def export_model(model: Model, path: str | Path, sample: NDArray[np.float32]) -> Path:
    """Write ``model`` to ``path`` (format by suffix); ``sample`` is a batch of its inputs
    (the input shape, and the trace of a network TorchScript cannot compile).

    Returns the path written. A model that cannot be written in that format is a
    :class:`ConfigError` naming the formats it can be written in.
    """
    out = Path(path).expanduser()
    kind = _kind(model)
    suffix = out.suffix.lower()
    if suffix not in EXPORT_SUFFIXES[kind]:
        raise ConfigError(
            f"{out}: a {kind} model can be written as {', '.join(EXPORT_SUFFIXES[kind])}, "
            f"not {suffix or 'a file without a suffix'}"
        )
    x = np.ascontiguousarray(sample, dtype=np.float32)
    if x.ndim < 2 or not len(x):
        raise ConfigError("export needs a sample batch of at least one input")
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "torch":
        assert isinstance(model, TorchModel)
        _export_torch(model, out, x)
    else:
        assert isinstance(model, SklearnModel)
        _export_sklearn(model, out, x)
    return out


def _export_torch(model: TorchModel, out: Path, x: NDArray[np.float32]) -> None:
    torch = require("torch", "exporting a PyTorch model")
    module = model.module.to("cpu").eval()
    example = torch.from_numpy(x[:2])
    try:
        with warnings.catch_warnings():
            # the TorchScript-based exporter is deprecated in favour of dynamo, which
            # needs onnxscript; its warnings are not the user's problem
            warnings.simplefilter("ignore")
            if out.suffix == ".onnx":
                torch.onnx.export(
                    module,
                    (example,),
                    str(out),
                    dynamo=False,
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                    opset_version=OPSET,
                )
            elif out.suffix == ".pt":
                try:
                    program = torch.jit.script(module)
                except Exception:  # a module TorchScript cannot compile: trace it
                    program = torch.jit.trace(module, example)
                program.save(str(out))
            else:
                batch = torch.export.Dim("batch", min=1)
                exported = torch.export.export(
                    module, (example,), dynamic_shapes=({0: batch},), strict=False
                )
                torch.export.save(exported, str(out))
    finally:
        model.module.to(model.device)


def _export_sklearn(model: SklearnModel, out: Path, x: NDArray[np.float32]) -> None:
    estimator: Any = model.estimator
    if out.suffix == ".skops":
        sio = require("skops.io", "exporting to skops")
        sio.dump(estimator, out)
        return
    classes = np.asarray(estimator.classes_)
    if len(classes) != model.n_classes or not (classes == np.arange(model.n_classes)).all():
        raise ConfigError(
            f"{out}: the estimator answers classes {classes.tolist()}, not "
            f"0..{model.n_classes - 1}: write it with skops (.skops), which keeps the mapping"
        )
    skl2onnx = require("skl2onnx", "exporting a scikit-learn model to ONNX")
    from skl2onnx.common.data_types import DoubleTensorType

    width = int(model.n_features or np.prod(x.shape[1:]))
    # double precision: SklearnModel computes in float64, and a float32 graph would
    # differ from it by more than the round trip's 1e-5 on some inputs
    onx = skl2onnx.convert_sklearn(
        estimator,
        initial_types=[("input", DoubleTensorType([None, width]))],
        options={id(estimator): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    out.write_bytes(onx.SerializeToString())
