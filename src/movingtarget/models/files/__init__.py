"""Model files: a user's classifier as a file, evaluated and served like any model.

:func:`load_model_file` reads a file by its suffix:

=================== ==================================================== ==============
suffix              read by                                              attacks get
=================== ==================================================== ==============
``.onnx``           onnxruntime, CPU execution provider                  scores
``.pt``             TorchScript (``torch.jit.load``)                     gradients
``.pt2``            ``torch.export.load`` (pickle inside: ``trust``)     gradients
``.skops``          skops, every type trusted (``trusted_types``)        scores
``.pkl`` ``.joblib`` pickle, only with ``trust = true`` (and a warning)  scores
=================== ==================================================== ==============

In a config the ``file`` model takes the same options, and checks the file against the
dataset (input values per row, number of classes) before any query::

    [model]
    name = "file"
    path = "logistic.onnx"

Every loaded model carries ``info``, a :class:`FileInfo` (format, SHA-256, input name,
shape and datatype), which ``serve`` reports in ``/healthz``, the audit log and metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from movingtarget.datasets.base import Split
from movingtarget.errors import ConfigError, DataError
from movingtarget.models.base import Model
from movingtarget.models.files.common import FileInfo, check_against, file_sha256
from movingtarget.models.files.sklearn import PICKLE_SUFFIXES

__all__ = ["FORMATS", "FileInfo", "file_info", "file_model", "file_sha256", "load_model_file"]

#: File suffix -> format name.
FORMATS = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".pt2": "torch-export",
    ".skops": "skops",
    **{s: "pickle" for s in PICKLE_SUFFIXES},
}


def load_model_file(
    path: str | Path,
    *,
    n_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    output: str = "auto",
    output_name: str | None = None,
    trust: bool = False,
    trusted_types: Sequence[str] = (),
    device: str = "auto",
) -> Model:
    """The model in the file at ``path``, read by its suffix (see the module docs).

    ``n_classes`` and ``input_shape`` are needed only where the file does not state them
    (a TorchScript program states neither); ``output`` says whether the scores are
    ``"logits"`` or ``"probabilities"`` where the graph does not say. Errors are one
    :class:`~movingtarget.errors.ConfigError` or :class:`~movingtarget.errors.DataError`
    naming the file.

    >>> load_model_file("model.h5")
    Traceback (most recent call last):
    ...
    movingtarget.errors.ConfigError: model.h5: unknown model file type '.h5'; ...
    """
    p = Path(path).expanduser()
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{p}: unknown model file type {p.suffix!r}; model files are "
            f"{', '.join(FORMATS)} (or use model.factory = 'module:function')"
        )
    if not p.is_file():
        raise DataError(f"{p}: no such model file")
    if not isinstance(trust, bool):
        raise ConfigError(f"{p}: trust must be true or false, got {trust!r}")
    if isinstance(trusted_types, str) or not all(isinstance(t, str) for t in trusted_types):
        raise ConfigError(f"{p}: trusted_types must be a list of type names")
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    if shape is not None and (not shape or min(shape) < 1):
        raise ConfigError(f"{p}: input_shape must be sizes >= 1, got {list(input_shape or ())}")
    if fmt == "onnx":
        from movingtarget.models.files.onnx import OnnxModel

        return OnnxModel(
            p, n_classes=n_classes, input_shape=shape, output=output, output_name=output_name
        )
    if fmt in ("torchscript", "torch-export"):
        from movingtarget.models.files.torch import TorchFileModel

        return TorchFileModel(
            p, n_classes=n_classes, input_shape=shape, output=output, trust=trust, device=device
        )
    from movingtarget.models.files.sklearn import load_pickle, load_skops

    if fmt == "skops":
        return load_skops(p, trusted_types=trusted_types, n_classes=n_classes)
    return load_pickle(p, trust=trust, n_classes=n_classes)


def file_info(model: Model) -> FileInfo | None:
    """The :class:`FileInfo` of a model loaded from a file, else None."""
    info = getattr(model, "info", None)
    return info if isinstance(info, FileInfo) else None


def file_model(
    split: Split,
    *,
    seed: int = 0,
    path: str = "",
    input_shape: list[int] | None = None,
    output: str = "auto",
    output_name: str | None = None,
    trust: bool = False,
    trusted_types: list[str] | None = None,
    device: str = "auto",
) -> Model:
    """The ``file`` model: a model file (``path``) checked against the split's data.

    ``seed`` is unused (a file is already trained). The file must take the split's
    inputs (the same number of values per row; another layout of them is reshaped) and
    answer its number of classes.
    """
    del seed
    if not path:
        raise ConfigError("model 'file' needs a path: [model] name = 'file', path = 'model.onnx'")
    if input_shape is None and Path(path).suffix.lower() == ".pt":
        input_shape = list(split.input_shape)  # TorchScript does not say; the data does
    fmt = FORMATS.get(Path(path).suffix.lower())
    model = load_model_file(
        path,
        # an ONNX graph states its classes, checked against the dataset's below
        n_classes=None if fmt == "onnx" else split.n_classes,
        input_shape=input_shape,
        output=output,
        output_name=output_name,
        trust=trust,
        trusted_types=tuple(trusted_types or ()),
        device=device,
    )
    info = file_info(model)
    if info is not None and info.input_shape:
        check_against(info, int(model.n_classes), split.input_shape, split.n_classes, split.name)
    elif int(model.n_classes) != split.n_classes:
        raise ConfigError(
            f"{path} answers {model.n_classes} classes but dataset {split.name!r} has "
            f"{split.n_classes}"
        )
    return model


# a file is already trained, and its contents may change under the same path: never cached
file_model.cacheable = False  # type: ignore[attr-defined]
