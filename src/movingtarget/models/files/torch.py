"""PyTorch programs: TorchScript (``.pt``, ``torch.jit.save``) and ``torch.export``
programs (``.pt2``, ``torch.export.save``).

Both are served through :class:`~movingtarget.models.TorchModel`, so the Adversarial
Robustness Toolbox gets their gradients. A TorchScript archive holds TorchScript code and
tensors, read by torch's own restricted loader. A ``.pt2`` archive is read with Python's
pickle inside ``torch.export.load`` (torch says: never from an untrusted source), so it
loads only with ``trust = true``.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from movingtarget.errors import ConfigError, DataError
from movingtarget.models.files.common import FileInfo, check_output_mode, read_bytes
from movingtarget.models.torch import TorchModel, require_torch

__all__ = ["TorchFileModel"]

_DTYPES = {"torch.float32": "FP32", "torch.float64": "FP64", "torch.float16": "FP16"}


def _torch_says(exc: Exception) -> str:
    """torch's own message, its last line only: TorchScript errors carry a serialized
    traceback of the program above the line that says what went wrong."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _wrap(torch: Any, program: Any, probabilities: bool) -> Any:
    """``program`` as a module of logits that :class:`TorchModel` can put in eval mode.

    An exported program refuses ``train()``/``eval()`` (its mode was fixed when it was
    exported), so the wrapper keeps the flag to itself. A program that outputs
    probabilities is read through their log: ``softmax(log p) = p``, with gradients.
    """

    class Program(torch.nn.Module):
        def __init__(self, inner: Any, exported: bool) -> None:
            super().__init__()
            self.inner = inner
            self.exported = exported

        def train(self, mode: bool = True) -> Any:
            self.training = mode
            if not self.exported:
                self.inner.train(mode)
            return self

        def forward(self, x: Any) -> Any:
            out = self.inner(x)
            if probabilities:
                out = torch.log(out.clamp_min(1e-30))
            return out

    return Program(program, not isinstance(program, torch.jit.ScriptModule))


def _exported_shape(program: Any) -> tuple[int, ...] | None:
    """The input shape after the batch axis an exported program declares, or None when a
    size is symbolic or there is not one input."""
    names = list(program.graph_signature.user_inputs)
    if len(names) != 1:
        return None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == names[0]:
            val = node.meta.get("val")
            dims = list(getattr(val, "shape", ()))[1:]
            if dims and all(isinstance(d, int) for d in dims):
                return tuple(int(d) for d in dims)
    return None


class TorchFileModel(TorchModel):
    """A :class:`TorchModel` loaded from a TorchScript (``.pt``) or exported (``.pt2``)
    program file.

    Parameters
    ----------
    path : str or Path
        The program file.
    n_classes : int, optional
        Classes ``k``; by default the width of the program's output on a zero input.
    input_shape : tuple of int, optional
        Shape of one input; a ``.pt2`` program states it, a TorchScript one does not.
    output : str
        ``"logits"`` (the default for ``auto``: torch classifiers output logits) or
        ``"probabilities"``.
    trust : bool
        Needed for ``.pt2``, which torch reads with pickle.
    device : str
        Torch device (``"auto"``: CUDA when available).

    Examples
    --------
    >>> import tempfile, os, numpy as np, torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> path = os.path.join(tempfile.mkdtemp(), "net.pt")
    >>> torch.jit.script(net).save(path)
    >>> model = TorchFileModel(path, n_classes=3, input_shape=(4,), device="cpu")
    >>> model.predict_proba(np.zeros((2, 4), np.float32)).shape, model.info.access
    ((2, 3), 'gradients')
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_classes: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        output: str = "auto",
        trust: bool = False,
        device: str = "auto",
        batch_size: int = 1024,
        lr: float = 0.01,
    ) -> None:
        self.path = Path(path)
        self.format = "torch-export" if self.path.suffix == ".pt2" else "torchscript"
        mode = check_output_mode(output, self.path)
        self.output = "logits" if mode == "auto" else mode
        if self.format == "torch-export" and not trust:
            raise ConfigError(
                f"{self.path}: a torch.export program is read with pickle, which can run any "
                "code: load it only from a source you trust, with trust = true "
                "(--trust for serve)"
            )
        blob = read_bytes(self.path)
        module, shape = self._load(blob, device, input_shape)
        if n_classes is None:
            n_classes = self._width(module, shape)
        super().__init__(
            module,
            n_classes,
            input_shape=shape,
            device=device,
            batch_size=batch_size,
            lr=lr,
        )
        self._blob = blob
        self._describe(hashlib.sha256(blob).hexdigest())

    def _width(self, module: Any, shape: tuple[int, ...] | None) -> int:
        """The number of classes: the width of the program's output on one zero input."""
        torch = require_torch()
        if shape is None:
            self.input_shape = None
            self._require_shape()
        assert shape is not None
        try:
            with torch.no_grad():
                out = module.to("cpu")(torch.zeros((1, *shape), dtype=torch.float32))
        except Exception as exc:  # the program does not take inputs of this shape
            raise ConfigError(
                f"{self.path}: the program fails on an input of shape {shape} "
                f"({_torch_says(exc)}): is input_shape right?"
            ) from None
        if out.ndim != 2:
            raise DataError(
                f"{self.path}: the program outputs shape {tuple(out.shape)}, not (n, k)"
            )
        return int(out.shape[1])

    def _describe(self, digest: str) -> None:
        self.input_shape = self._require_shape()
        dtype = "FP32"
        for p in self.module.parameters():  # the weights' type is the input's
            dtype = _DTYPES.get(str(p.dtype), "FP32")
            break
        self.info = FileInfo(
            str(self.path), self.format, digest, "input", self.input_shape, dtype, "gradients"
        )

    def _require_shape(self) -> tuple[int, ...]:
        if self.input_shape is None:
            raise ConfigError(
                f"{self.path}: a TorchScript program does not state its input shape: set "
                "input_shape (--input-shape 1,28,28 for serve)"
            )
        return self.input_shape

    def _load(
        self, blob: bytes, device: str, input_shape: tuple[int, ...] | None
    ) -> tuple[Any, tuple[int, ...] | None]:
        torch = require_torch()
        from movingtarget.models.torch import resolve_device

        where = str(self.path)
        stated = tuple(int(s) for s in input_shape) if input_shape is not None else None
        if self.format == "torchscript":
            try:
                with warnings.catch_warnings():
                    # torch 2.10+ calls TorchScript deprecated; it still loads and runs it
                    warnings.simplefilter("ignore", DeprecationWarning)
                    program = torch.jit.load(io.BytesIO(blob), map_location=resolve_device(device))
            except Exception as exc:  # not a TorchScript archive, or a damaged one
                raise DataError(
                    f"{where}: not a TorchScript program (save one with torch.jit.save; "
                    f"torch says: {_torch_says(exc)})"
                ) from None
            return _wrap(torch, program, self.output == "probabilities"), stated
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exported = torch.export.load(io.BytesIO(blob))
        except Exception as exc:
            raise DataError(
                f"{where}: not a torch.export program (save one with torch.export.save; "
                f"torch says: {_torch_says(exc)})"
            ) from None
        declared = _exported_shape(exported)
        if stated is not None and declared is not None and stated != declared:
            raise ConfigError(
                f"{where}: input_shape {stated} does not match the program's input shape {declared}"
            )
        program = exported.module()
        return _wrap(torch, program, self.output == "probabilities"), stated or declared

    def predict_proba(self, x: Any) -> Any:
        """Softmax of the program's logits, ``(n, n_classes)`` float64; inputs with the
        same number of values in another layout are reshaped."""
        arr = np.asarray(x)
        shape = self._require_shape()
        if arr.ndim >= 2 and arr.shape[1:] != shape and np.prod(arr.shape[1:]) == np.prod(shape):
            arr = arr.reshape((len(arr), *shape))
        return super().predict_proba(arr)

    def __getstate__(self) -> dict[str, Any]:
        # neither program pickles: the file's bytes rebuild it (a TorchScript program is
        # saved as it is now, so online updates are kept)
        torch = require_torch()
        state = super().__getstate__()
        if self.format == "torchscript":
            buffer = io.BytesIO()
            torch.jit.save(self.module.inner.to("cpu"), buffer)
            self.module.inner.to(self.device)
            state["_blob"] = buffer.getvalue()
        state.pop("module", None)
        state["device"] = "cpu"
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        module, _ = self._load(self._blob, "cpu", self.input_shape)
        self.module = module.eval()

    def __repr__(self) -> str:
        return f"TorchFileModel({str(self.path)!r}, n_classes={self.n_classes}, {self.format})"
