"""Reference models, each trained in seconds on two CPU cores.

Every factory has the signature ``factory(split, *, seed=0, **params) -> Model`` and
is registered in :data:`movingtarget.models.MODELS`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from movingtarget.datasets.base import Split
from movingtarget.errors import ConfigError
from movingtarget.models.sklearn import SklearnModel
from movingtarget.models.torch import TorchModel, require_torch, resolve_device

__all__ = ["cnn", "cnn_module", "logistic", "mlp", "subsample"]


def sklearn_seed(seed: int) -> int:
    """``seed`` in scikit-learn's range ``[0, 2**32)``: the same below it, folded above it
    (derived seeds, such as an adversary's surrogate's, are 64-bit).

    >>> sklearn_seed(7), sklearn_seed(2**32 + 7)
    (7, 7)
    """
    return int(seed) % 2**32


def subsample(
    x: NDArray[np.float32], y: NDArray[np.int64], max_train: int | None, seed: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """At most ``max_train`` examples, drawn without replacement by ``seed`` (order kept)."""
    if max_train is not None and (
        isinstance(max_train, bool) or not isinstance(max_train, int) or max_train < 1
    ):
        raise ConfigError(f"max_train must be a positive integer or None, got {max_train!r}")
    if max_train is None or len(y) <= max_train:
        return x, y
    idx = np.sort(np.random.default_rng(seed).choice(len(y), size=max_train, replace=False))
    return x[idx], y[idx]


def _fit_sklearn(
    name: str, estimator: Any, split: Split, max_train: int | None, seed: int
) -> SklearnModel:
    x, y = subsample(split.x_train, split.y_train, max_train, seed)
    flat = x.reshape(len(x), -1).astype(np.float64)
    if len(np.unique(y)) < 2:
        raise ConfigError(f"model {name!r}: the training data of {split.name!r} has one class")
    with warnings.catch_warnings():
        # The iteration caps are deliberate (seconds, not minutes); a capped fit is fine.
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(flat, y)
    return SklearnModel(estimator, split.n_classes)


def logistic(
    split: Split,
    *,
    seed: int = 0,
    C: float = 0.1,
    max_iter: int = 100,
    max_train: int | None = 20000,
) -> SklearnModel:
    """StandardScaler + multinomial LogisticRegression (served by the NumPy fast path).

    Examples
    --------
    >>> from movingtarget.datasets import load_digits
    >>> model = logistic(load_digits().split(seed=0))
    >>> model.fast_path
    True
    """
    est = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, max_iter=max_iter, random_state=sklearn_seed(seed)),
    )
    return _fit_sklearn("logistic", est, split, max_train, seed)


def mlp(
    split: Split,
    *,
    seed: int = 0,
    hidden: Sequence[int] = (64,),
    max_iter: int = 30,
    alpha: float = 1e-4,
    max_train: int | None = 20000,
) -> SklearnModel:
    """StandardScaler + a small MLPClassifier (Adam); supports ``partial_fit``.

    Examples
    --------
    >>> from movingtarget.datasets import load_digits
    >>> from movingtarget.models import OnlineModel
    >>> isinstance(mlp(load_digits().split(seed=0), max_iter=5), OnlineModel)
    True
    """
    est = make_pipeline(
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=tuple(int(h) for h in hidden),
            max_iter=max_iter,
            alpha=alpha,
            random_state=sklearn_seed(seed),
        ),
    )
    return _fit_sklearn("mlp", est, split, max_train, seed)


def cnn(
    split: Split,
    *,
    seed: int = 0,
    epochs: int = 2,
    max_train: int | None = 20000,
    batch_size: int = 128,
    lr: float = 1e-3,
    channels: Sequence[int] = (16, 32),
    device: str = "auto",
) -> TorchModel:
    """A small CNN (two 3x3 conv + ReLU + 2x2 max-pool blocks, a linear head) in PyTorch.

    Needs image inputs ``(n, C, H, W)`` with ``H, W >= 4``. Trained with Adam for
    ``epochs`` passes over at most ``max_train`` examples; weights and batch order are
    seeded (``torch.manual_seed`` inside a forked RNG, so the global state is kept).

    Examples
    --------
    >>> from movingtarget.datasets import load_fashion_mnist
    >>> split = load_fashion_mnist(limit=2000).split(seed=0)  # doctest: +SKIP
    >>> cnn(split, epochs=1).input_shape  # doctest: +SKIP
    (1, 28, 28)
    """
    torch = require_torch()
    _check_training("cnn", epochs=epochs, batch_size=batch_size, lr=lr)
    dev = resolve_device(device)
    x, y = subsample(split.x_train, split.y_train, max_train, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = cnn_module(split, channels, name="cnn").to(dev)
        _train_torch(module, x, y, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr)
    return TorchModel(module, split.n_classes, input_shape=split.input_shape, device=dev)


def _positive_int(name: str, param: str, value: Any) -> int:
    """``value`` as an int >= 1, else a ConfigError naming ``param`` of model ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"model {name!r}: {param} must be a positive integer, got {value!r}")
    return int(value)


def _check_training(name: str, *, epochs: Any, batch_size: Any, lr: Any) -> None:
    """ConfigError naming the first of ``epochs``, ``batch_size``, ``lr`` that is invalid."""
    _positive_int(name, "epochs", epochs)
    _positive_int(name, "batch_size", batch_size)
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < float("inf"):
        raise ConfigError(f"model {name!r}: lr must be a positive number, got {lr!r}")


def cnn_module(split: Split, channels: Sequence[int], *, name: str) -> Any:
    """The untrained network of ``cnn`` for ``split`` (ConfigError unless it has images)."""
    torch = require_torch()
    shape = split.input_shape
    if len(shape) != 3 or shape[1] < 4 or shape[2] < 4:
        raise ConfigError(
            f"model {name!r} needs image inputs (n, C, H, W) with H, W >= 4; dataset "
            f"{split.name!r} has inputs of shape {shape} (use 'logistic' or 'mlp')"
        )
    c1, c2 = (_positive_int(name, "channels", c) for c in channels)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(shape[0], c1, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (shape[1] // 4) * (shape[2] // 4), split.n_classes),
    )


#: ``perturb(x_batch, y_batch) -> x_batch``: what a training batch becomes before the
#: step (Gaussian noise, adversarial examples); called with the module in train mode.
Perturb = Callable[[Any, Any], Any]


def _train_torch(
    module: Any,
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    label_smoothing: float = 0.0,
    perturb: Perturb | None = None,
) -> None:
    """Train ``module`` (logits out) in place with Adam and cross-entropy.

    The batch order comes from ``numpy.random.default_rng(seed)``; the caller seeds
    torch (weights, noise) inside ``torch.random.fork_rng``. Tensors live on the
    module's device. ``perturb`` may replace each batch's inputs before its step.
    """
    torch = require_torch()
    dev = next(module.parameters()).device
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(dev)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(yt))).to(dev)
        for start in range(0, len(yt), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = xt[idx], yt[idx]
            if perturb is not None:
                xb = perturb(xb, yb)
            module.train()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                module(xb), yb, label_smoothing=label_smoothing
            )
            loss.backward()
            opt.step()
    module.eval()
