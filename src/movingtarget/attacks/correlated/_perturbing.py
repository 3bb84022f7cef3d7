"""What the perturbing correlated adversaries share: gradient attacks through the
project's ART adapters (:mod:`movingtarget.attacks.perturb`), fresh noise around an
input, and byte-exact keys of inputs (what an exact memory tells apart).

ART is imported only when a :class:`Perturber` first crafts (the ``attacks`` extra).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.attacks.base import NO_TARGET
from movingtarget.errors import ConfigError

#: The per-input attacks a perturbing adversary may use: fixed-budget, gradient-based,
#: so each input costs a known number of model evaluations (see :func:`craft_cost`).
GRADIENT_ATTACKS = ("fgsm", "pgd")


def check_attack(name: object, where: str) -> str:
    """``name`` if it is one of :data:`GRADIENT_ATTACKS`, else a :class:`ConfigError`.

    >>> check_attack("pgd", "screening.perturb")
    'pgd'
    """
    if name not in GRADIENT_ATTACKS:
        raise ConfigError(f"{where} must be one of {GRADIENT_ATTACKS}, got {name!r}")
    return str(name)


def craft_cost(name: str, max_iter: int) -> int:
    """Model evaluations one input costs: a gradient per step plus the check of the
    result (``fgsm``: 2; ``pgd``: ``max_iter + 1``).

    >>> craft_cost("fgsm", 20), craft_cost("pgd", 20)
    (2, 21)
    """
    return 2 if name == "fgsm" else int(max_iter) + 1


def check_positive(value: float, where: str, *, allow_zero: bool = False) -> float:
    """``value`` as a float if it is finite and > 0 (>= 0 with ``allow_zero``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{where} must be a number {bound}, got {value!r}")
    return float(value)


def check_perturbation(
    who: str, eps: float, norm: str, max_iter: int, noise: float
) -> tuple[float, float]:
    """The shared perturbation settings of the perturbing attackers, checked: ``eps``
    and ``noise`` (> 0) as floats; ``norm`` must be ``"inf"`` or ``"2"`` and
    ``max_iter`` an integer >= 1, each a ConfigError naming ``who``'s field."""
    checked_eps = check_positive(eps, f"{who}: eps")
    if norm not in ("inf", "2"):
        raise ConfigError(f"{who}: norm must be 'inf' or '2', got {norm!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError(f"{who}: max_iter must be an integer >= 1, got {max_iter!r}")
    return checked_eps, check_positive(noise, f"{who}: noise")


def craft_seed(seed: Any) -> int:
    """A seed for :func:`~movingtarget.attacks.perturb.craft` (numpy's legacy global
    generator takes only ``[0, 2**32)``) from any seed a generator takes.

    >>> craft_seed(2**40) < 2**32, craft_seed(3) == craft_seed(3)
    (True, True)
    """
    return int(np.random.SeedSequence(seed).generate_state(1)[0])


def uniform_noise(
    x: NDArray[np.float32], eps: float, rng: np.random.Generator, lo: float, hi: float
) -> NDArray[np.float32]:
    """``x`` plus uniform noise in ``[-eps, eps]`` per feature, clipped to ``[lo, hi]``.

    >>> out = uniform_noise(np.zeros((2, 3), np.float32), 0.1, np.random.default_rng(0), 0, 1)
    >>> out.dtype.name, bool((out >= 0).all() and (out <= 0.1).all())
    ('float32', True)
    """
    noise = rng.uniform(-eps, eps, size=x.shape).astype(np.float32)
    return np.clip(x + noise, lo, hi).astype(np.float32)


def row_keys(x: NDArray[np.float32]) -> list[bytes]:
    """One key per row: its float32 bytes (two rows share a key iff byte-identical).

    >>> a = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    >>> k = row_keys(a); k[0] == k[1], k[0] == k[2]
    (True, False)
    """
    flat = np.ascontiguousarray(np.asarray(x, np.float32).reshape(len(x), -1))
    return [row.tobytes() for row in flat]


class Perturber:
    """Perturbs inputs with a gradient attack on one model (the deployed model, or a
    surrogate), through :func:`~movingtarget.attacks.perturb.craft`.

    Parameters
    ----------
    model:
        A model with gradients (a torch model, or a logistic regression).
    attack:
        ``"fgsm"`` or ``"pgd"``.
    eps, norm, max_iter:
        The attack's budget: its size in norm ``norm`` (``"inf"`` or ``"2"``), and
        PGD's steps.
    clip_values:
        The input range (the attacker's pool's min and max).

    Examples
    --------
    >>> from movingtarget.datasets import load_digits
    >>> from movingtarget.models import build_model
    >>> split = load_digits().split(seed=0)
    >>> p = Perturber(build_model("logistic", split), "fgsm", 0.2, clip_values=(0.0, 1.0))
    >>> x_adv = p.perturb(split.x_test[:8], split.y_test[:8])
    >>> x_adv.shape, bool(np.abs(x_adv - split.x_test[:8]).max() <= 0.2 + 1e-6)
    ((8, 64), True)
    """

    def __init__(
        self,
        model: Any,
        attack: str,
        eps: float,
        *,
        clip_values: tuple[float, float],
        norm: str = "inf",
        max_iter: int = 20,
        seed: Any = 0,
    ) -> None:
        self.model, self.attack, self.eps = model, attack, float(eps)
        self.norm, self.max_iter, self.seed = norm, int(max_iter), craft_seed(seed)
        self.clip_values = clip_values
        self._estimator: Any = None

    def perturb(
        self,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        target: int = NO_TARGET,
    ) -> NDArray[np.float32]:
        """Adversarial versions of ``x`` (true classes ``y``; toward ``target`` if set)."""
        from movingtarget.attacks.perturb import craft
        from movingtarget.attacks.perturb.estimators import wrap_model

        if self._estimator is None:
            self._estimator = wrap_model(
                self.model, clip_values=self.clip_values, input_shape=tuple(x.shape[1:])
            )
        budget: dict[str, Any] = {"eps": self.eps}
        if self.attack == "pgd":
            budget["max_iter"] = self.max_iter
        aim = None if target == NO_TARGET else np.full(len(x), target, np.int64)
        out = craft(
            self.attack,
            self._estimator,
            x,
            y,
            target=aim,
            norm=self.norm,
            seed=self.seed,
            **budget,
        )
        return np.asarray(out.x_adv, np.float32)
