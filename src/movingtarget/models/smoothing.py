"""Boundary-smoothing baselines: PyTorch models trained to resist per-input attacks.

Papernot and McDaniel (2016) list the defenses that smooth a model's decision
boundary: adversarial training (train on the attack's own examples) and training on
noisy inputs. They make it harder to move an input out of its class (model
resilience); Goodfellow (2019) notes that they do not lower the natural error rate
``r``, so a test set attack is untouched. These models are the baselines the dynamic
defenses are compared with.

| name | training |
|---|---|
| ``torch-mlp`` | an MLP (flatten, ``hidden`` ReLU units, a linear head), Adam, cross-entropy |
| ``adv-mlp`` | the same MLP, Madry-style adversarial training: L∞ PGD examples (ART) |
| ``adv-cnn`` | the ``cnn`` network, the same adversarial training |
| ``noise-mlp`` | the same MLP, each batch perturbed by N(0, sigma²) noise, clipped |

All share the training loop of ``cnn`` (batch order from ``numpy.random.default_rng(seed)``,
weights seeded by ``torch.manual_seed`` inside a forked RNG) and return a
:class:`~movingtarget.models.TorchModel`, whose ``module`` the Adversarial Robustness
Toolbox can attack. The data range (for clipping and for ART's ``clip_values``) is
the training inputs' minimum and maximum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from movingtarget._optional import require
from movingtarget.datasets.base import Split
from movingtarget.errors import ConfigError
from movingtarget.models.reference import (
    Perturb,
    _check_training,
    _positive_int,
    _train_torch,
    cnn_module,
    subsample,
)
from movingtarget.models.torch import TorchModel, require_torch, resolve_device

__all__ = ["adv_cnn", "adv_mlp", "mlp_module", "noise_mlp", "torch_mlp"]

#: ``make_perturb(module, lo, hi) -> perturb``, called once the module is built.
MakePerturb = Callable[[Any, float, float], Perturb]


def mlp_module(split: Split, hidden: int | Sequence[int], *, name: str) -> Any:
    """The untrained MLP of ``torch-mlp``: flatten, ReLU hidden layers, a linear head."""
    torch = require_torch()
    sizes = [hidden] if isinstance(hidden, int | np.integer) else list(hidden)
    if not sizes:
        raise ConfigError(f"model {name!r}: hidden must name at least one layer size")
    widths = [_positive_int(name, "hidden", h) for h in sizes]
    nn = torch.nn
    layers: list[Any] = [nn.Flatten()]
    width = math.prod(split.input_shape)
    for h in widths:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, split.n_classes))
    return nn.Sequential(*layers)


def _fraction(name: str, param: str, value: Any, *, low: float, high: float) -> float:
    """``value`` as a float in ``(low, high]``, else a ConfigError naming ``param``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
        where = "be positive" if high == math.inf else f"lie in ({low:g}, {high:g}]"
        raise ConfigError(f"model {name!r}: {param} must {where}, got {value!r}")
    return float(value)


def _fit(
    name: str,
    split: Split,
    make_module: Callable[[], Any],
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    max_train: int | None,
    device: str,
    label_smoothing: float = 0.0,
    make_perturb: MakePerturb | None = None,
) -> TorchModel:
    """Build the module (seeded), train it with the shared loop, wrap it."""
    torch = require_torch()
    _check_training(name, epochs=epochs, batch_size=batch_size, lr=lr)
    if isinstance(label_smoothing, bool) or not (
        isinstance(label_smoothing, int | float) and 0 <= label_smoothing < 1
    ):
        raise ConfigError(
            f"model {name!r}: label_smoothing must lie in [0, 1), got {label_smoothing!r}"
        )
    dev = resolve_device(device)
    x, y = subsample(split.x_train, split.y_train, max_train, seed)
    lo, hi = float(x.min()), float(x.max())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = make_module().to(dev)
        perturb = make_perturb(module, lo, hi) if make_perturb is not None else None
        _train_torch(
            module,
            x,
            y,
            seed=seed,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            label_smoothing=float(label_smoothing),
            perturb=perturb,
        )
    return TorchModel(module, split.n_classes, input_shape=split.input_shape, device=dev)


def torch_mlp(
    split: Split,
    *,
    seed: int = 0,
    hidden: int | Sequence[int] = 64,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 3e-3,
    label_smoothing: float = 0.0,
    max_train: int | None = 20000,
    device: str = "auto",
) -> TorchModel:
    """A PyTorch MLP: flatten, ``hidden`` ReLU units, a linear head; Adam, cross-entropy.

    The standard (undefended) counterpart of ``adv-mlp`` and ``noise-mlp``; any input
    shape works. ``label_smoothing`` goes to the cross-entropy (0 = none).

    Parameters
    ----------
    split : Split
        Training data (at most ``max_train`` examples, a seeded subsample).
    seed : int
        Seeds the weights and the batch order.
    hidden : int or sequence of int
        Widths of the hidden layers (one layer of 64 by default).
    epochs, batch_size, lr : int, int, float
        Adam passes over the data, rows per step, learning rate.
    label_smoothing : float
        In ``[0, 1)``.
    max_train : int or None
        Cap on the training examples.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...

    Examples
    --------
    >>> from movingtarget.datasets import load_digits
    >>> model = torch_mlp(load_digits().split(seed=0), epochs=1, device="cpu")
    >>> model.input_shape, model.n_classes
    ((64,), 10)
    """
    return _fit(
        "torch-mlp",
        split,
        lambda: mlp_module(split, hidden, name="torch-mlp"),
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_train=max_train,
        device=device,
        label_smoothing=label_smoothing,
    )


def _pgd_perturb(
    name: str,
    split: Split,
    *,
    seed: int,
    eps: float,
    eps_step: float | None,
    max_iter: int,
    ratio: float,
) -> MakePerturb:
    """``make_perturb`` for Madry-style training: L∞ PGD (random start) on a share of
    each batch, through ART's ``ProjectedGradientDescent`` on a ``PyTorchClassifier``."""
    eps = _fraction(name, "eps", eps, low=0.0, high=math.inf)
    iters = _positive_int(name, "max_iter", max_iter)
    step = 2.5 * eps / iters if eps_step is None else eps_step
    step = _fraction(name, "eps_step", step, low=0.0, high=math.inf)
    share = _fraction(name, "ratio", ratio, low=0.0, high=1.0)
    # ART 1.20 imports ``packaging`` without declaring it; it comes with pip's tooling.
    require("art", f"model {name!r} (adversarial training with ART)")
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    torch = require_torch()

    def make(module: Any, lo: float, hi: float) -> Perturb:
        dev = next(module.parameters()).device
        classifier = PyTorchClassifier(
            model=module,
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=split.input_shape,
            nb_classes=split.n_classes,
            clip_values=(lo, hi),
            device_type="gpu" if dev.type == "cuda" else "cpu",
        )
        attack = ProjectedGradientDescent(
            classifier,
            norm=np.inf,
            eps=eps,
            eps_step=step,
            max_iter=iters,
            num_random_init=1,
            verbose=False,
        )
        # ART draws the random start from NumPy's global RNG: seed a private state
        # for the attack and restore the caller's around each call.
        state = np.random.RandomState(seed)

        def perturb(xb: Any, yb: Any) -> Any:
            n_adv = max(1, round(share * len(xb)))
            outer = np.random.get_state()
            np.random.set_state(state.get_state())
            try:
                adv = attack.generate(
                    x=xb[:n_adv].detach().cpu().numpy().astype(np.float32),
                    y=yb[:n_adv].cpu().numpy(),
                    batch_size=n_adv,
                )
                state.set_state(np.random.get_state())
            finally:
                np.random.set_state(outer)
            xb = xb.clone()
            xb[:n_adv] = torch.from_numpy(np.ascontiguousarray(adv, dtype=np.float32)).to(dev)
            return xb

        return perturb

    return make


def _adversarial(
    name: str,
    split: Split,
    build: Callable[[], Any],
    *,
    seed: int,
    pgd: dict[str, Any],
    train: dict[str, Any],
    device: str,
) -> TorchModel:
    """Train ``build()`` on PGD examples of itself (the adv-* models' shared recipe)."""
    make_perturb = _pgd_perturb(name, split, seed=seed, **pgd)
    return _fit(name, split, build, seed=seed, device=device, make_perturb=make_perturb, **train)


def adv_mlp(
    split: Split,
    *,
    seed: int = 0,
    eps: float = 0.1,
    eps_step: float | None = None,
    max_iter: int = 5,
    ratio: float = 1.0,
    hidden: int | Sequence[int] = 64,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 3e-3,
    max_train: int | None = 20000,
    device: str = "auto",
) -> TorchModel:
    """The ``torch-mlp`` network, adversarially trained (Madry et al., L∞ PGD).

    Each batch's first ``round(ratio * batch_size)`` rows (the order is random) are
    replaced by PGD examples against the current weights: a uniform random start in
    the ``eps`` ball, ``max_iter`` signed-gradient steps of ``eps_step`` (default
    ``2.5 * eps / max_iter``), clipped to the data range; the labels are the true
    ones. Needs ``pip install 'movingtarget[attacks]'`` (ART) and PyTorch.

    Parameters
    ----------
    split : Split
        Training data.
    seed : int
        Seeds the weights, the batch order and the PGD random starts.
    eps, eps_step, max_iter : float, float or None, int
        The attack trained against: L∞ radius, step, steps.
    ratio : float
        Share of adversarial rows per batch, in ``(0, 1]`` (1 = Madry's min-max).
    hidden, epochs, batch_size, lr, max_train, device
        As for ``torch-mlp``.

    Examples
    --------
    >>> from movingtarget.datasets import load_digits
    >>> model = adv_mlp(load_digits().split(seed=0), epochs=1, max_iter=2, device="cpu")
    >>> model.n_classes
    10
    >>> adv_mlp(load_digits().split(seed=0), eps=-0.1)
    Traceback (most recent call last):
    ...
    movingtarget.errors.ConfigError: model 'adv-mlp': eps must be positive, got -0.1
    """
    return _adversarial(
        "adv-mlp",
        split,
        lambda: mlp_module(split, hidden, name="adv-mlp"),
        seed=seed,
        pgd=dict(eps=eps, eps_step=eps_step, max_iter=max_iter, ratio=ratio),
        train=dict(epochs=epochs, batch_size=batch_size, lr=lr, max_train=max_train),
        device=device,
    )


def adv_cnn(
    split: Split,
    *,
    seed: int = 0,
    eps: float = 0.1,
    eps_step: float | None = None,
    max_iter: int = 5,
    ratio: float = 1.0,
    epochs: int = 2,
    max_train: int | None = 20000,
    batch_size: int = 128,
    lr: float = 1e-3,
    channels: Sequence[int] = (16, 32),
    device: str = "auto",
) -> TorchModel:
    """The ``cnn`` network with the adversarial training of ``adv-mlp``.

    Needs image inputs ``(n, C, H, W)`` with ``H, W >= 4``, ART and PyTorch. About
    ``max_iter + 1`` times the training time of ``cnn``.

    Examples
    --------
    >>> from movingtarget.datasets import load_fashion_mnist
    >>> split = load_fashion_mnist(limit=2000).split(seed=0)  # doctest: +SKIP
    >>> adv_cnn(split, epochs=1).input_shape  # doctest: +SKIP
    (1, 28, 28)
    """
    return _adversarial(
        "adv-cnn",
        split,
        lambda: cnn_module(split, channels, name="adv-cnn"),
        seed=seed,
        pgd=dict(eps=eps, eps_step=eps_step, max_iter=max_iter, ratio=ratio),
        train=dict(epochs=epochs, batch_size=batch_size, lr=lr, max_train=max_train),
        device=device,
    )


def noise_mlp(
    split: Split,
    *,
    seed: int = 0,
    sigma: float = 0.1,
    hidden: int | Sequence[int] = 64,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 3e-3,
    max_train: int | None = 20000,
    device: str = "auto",
) -> TorchModel:
    """The ``torch-mlp`` network trained on noisy inputs (Gaussian data augmentation).

    Every training batch gets fresh N(0, ``sigma``²) noise on each input value (a
    seeded ``torch.Generator``), clipped to the data range; the labels are kept.

    Examples
    --------
    >>> from movingtarget.datasets import load_digits
    >>> noise_mlp(load_digits().split(seed=0), epochs=1, device="cpu").n_classes
    10
    >>> noise_mlp(load_digits().split(seed=0), sigma=0)
    Traceback (most recent call last):
    ...
    movingtarget.errors.ConfigError: model 'noise-mlp': sigma must be positive, got 0
    """
    scale = _fraction("noise-mlp", "sigma", sigma, low=0.0, high=math.inf)
    torch = require_torch()

    def make(module: Any, lo: float, hi: float) -> Perturb:
        dev = next(module.parameters()).device
        gen = torch.Generator(device=dev).manual_seed(seed)

        def perturb(xb: Any, yb: Any) -> Any:
            noise = torch.randn(xb.shape, generator=gen, device=dev, dtype=xb.dtype)
            return (xb + scale * noise).clamp(lo, hi)

        return perturb

    return _fit(
        "noise-mlp",
        split,
        lambda: mlp_module(split, hidden, name="noise-mlp"),
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_train=max_train,
        device=device,
        make_perturb=make,
    )
