"""PyTorch adapter. torch is optional: this module imports it only when a model is built."""

from __future__ import annotations

import copy
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from movingtarget._optional import require
from movingtarget.errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch as _torch_types

__all__ = ["TorchModel", "require_torch", "resolve_device"]


def require_torch() -> ModuleType:
    """The ``torch`` module, or a :class:`ConfigError` that says how to install it."""
    return require("torch", "this model (PyTorch)")


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` becomes ``"cuda"`` when a GPU is available, else ``"cpu"``."""
    torch = require_torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown torch device {device!r} ({exc})") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return device


class TorchModel:
    """A :class:`~movingtarget.models.Model` around a PyTorch module that outputs logits.

    Inputs are cast to float32 and run through ``module`` in evaluation mode without
    gradients, ``batch_size`` rows at a time; the answer is the softmax of the
    logits. ``module`` and ``input_shape`` are exposed so the Adversarial Robustness
    Toolbox can wrap the same network (``PyTorchClassifier``). :meth:`partial_fit`
    takes one SGD step on a labeled batch (cross-entropy loss, learning rate ``lr``).

    Parameters
    ----------
    module : torch.nn.Module
        Maps ``(n, *input_shape)`` float32 to ``(n, n_classes)`` logits.
    n_classes : int
        Number of classes ``k``.
    input_shape : tuple of int, optional
        Shape of one input; taken from the first batch when omitted.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    batch_size : int
        Rows per forward pass.
    lr : float
        Learning rate of :meth:`partial_fit`.

    Examples
    --------
    >>> import numpy as np, torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> model = TorchModel(net, n_classes=3, input_shape=(4,), device="cpu")
    >>> model.predict_proba(np.zeros((2, 4), np.float32)).shape
    (2, 3)
    >>> model.partial_fit(np.ones((2, 4), np.float32), np.array([0, 2]))
    """

    def __init__(
        self,
        module: _torch_types.nn.Module,
        n_classes: int,
        *,
        input_shape: tuple[int, ...] | None = None,
        device: str = "auto",
        batch_size: int = 1024,
        lr: float = 0.01,
    ) -> None:
        torch = require_torch()
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(f"TorchModel needs a torch.nn.Module, got {type(module).__name__}")
        if n_classes < 2:
            raise ConfigError(f"n_classes must be at least 2, got {n_classes}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.n_classes = int(n_classes)
        self.input_shape: tuple[int, ...] | None = (
            tuple(int(s) for s in input_shape) if input_shape is not None else None
        )
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        self._optimizer: Any = None

    def to(self, device: str) -> TorchModel:
        """Move the network to ``device`` (``"auto"`` allowed); returns ``self``."""
        self.device = resolve_device(device)
        self.module.to(self.device)
        self._optimizer = None
        return self

    def _check(self, x: NDArray[Any]) -> NDArray[np.float32]:
        arr = np.asarray(x, dtype=np.float32)
        if self.input_shape is None:
            if arr.ndim < 2:
                raise InputError(f"inputs must be (n, features...), got shape {arr.shape}")
            self.input_shape = tuple(arr.shape[1:])
        if arr.shape[1:] != self.input_shape:
            raise InputError(
                f"inputs must have shape (n, {', '.join(map(str, self.input_shape))}), "
                f"got {arr.shape}"
            )
        return np.ascontiguousarray(arr)

    def predict_proba(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """Softmax of the logits, ``(n, n_classes)`` float64."""
        torch = require_torch()
        arr = self._check(x)
        out = np.empty((len(arr), self.n_classes), dtype=np.float64)
        self.module.eval()
        with torch.no_grad():
            for start in range(0, len(arr), self.batch_size):
                chunk = torch.from_numpy(arr[start : start + self.batch_size]).to(self.device)
                logits = self.module(chunk)
                if logits.ndim != 2 or logits.shape[1] != self.n_classes:
                    raise ConfigError(
                        f"the torch module returned shape {tuple(logits.shape)}, "
                        f"expected (n, {self.n_classes})"
                    )
                probs = torch.softmax(logits.double(), dim=1)
                out[start : start + len(chunk)] = probs.cpu().numpy()
        return out

    def partial_fit(self, x: NDArray[np.float32], y: NDArray[np.int64]) -> None:
        """One SGD step (cross-entropy, learning rate ``lr``) on the labeled batch."""
        torch = require_torch()
        arr = self._check(x)
        labels = np.asarray(y, dtype=np.int64)
        if labels.shape != (len(arr),):
            raise InputError(f"{len(arr)} inputs but labels of shape {labels.shape}")
        if len(arr) == 0:
            return
        if labels.min() < 0 or labels.max() >= self.n_classes:
            raise InputError(f"labels must lie in [0, {self.n_classes})")
        if self._optimizer is None:
            self._optimizer = torch.optim.SGD(self.module.parameters(), lr=self.lr)
        self.module.train()
        try:
            self._optimizer.zero_grad()
            logits = self.module(torch.from_numpy(arr).to(self.device))
            target = torch.from_numpy(labels).to(self.device)
            loss = torch.nn.functional.cross_entropy(logits, target)
            loss.backward()
            self._optimizer.step()
        finally:
            self.module.eval()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_optimizer"] = None
        if self.device != "cpu":
            state["module"] = copy.deepcopy(self.module).to("cpu")
            state["device"] = "cpu"
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"TorchModel({type(self.module).__name__}, n_classes={self.n_classes}, "
            f"input_shape={self.input_shape}, device={self.device!r})"
        )
