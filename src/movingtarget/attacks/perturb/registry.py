"""Per-input attacks by name, each with its budget, norms and the capability it needs.

=================  ==========  =========  ===============  ======================================
name               needs       norms      targeted         budget (defaults)
=================  ==========  =========  ===============  ======================================
fgsm               gradients   inf, 2, 1  yes / no         eps=0.1
pgd                gradients   inf, 2, 1  yes / no         eps=0.1, eps_step=eps/4, max_iter=20
jsma               gradients   0          always           theta=1.0, gamma=0.3
carlini-wagner     gradients   2          yes / no         confidence=0, max_iter=10, ...
deepfool           gradients   2          no               max_iter=50, overshoot=0.02
hopskipjump        labels      2, inf     yes / no         max_iter=20, max_eval=1000
square             scores      inf, 2     no               eps=0.1, max_iter=100
simba              scores      2          yes / no         epsilon=0.1, max_iter=1000
boundary           labels      2          yes / no         max_iter=500, delta=0.01, epsilon=0.01
=================  ==========  =========  ===============  ======================================

Fixed-budget attacks (``fgsm``, ``pgd``, ``square``) stay within ``eps`` in their norm;
minimization attacks (``deepfool``, ``carlini-wagner``, ``hopskipjump``, ``boundary``,
``jsma`` with its ``gamma`` cap on the share of features changed) look for a small
perturbation that changes the class. The capability an attack needs is checked when it
is built, so an attack that needs gradients on a model without them is one clear
message that names the alternatives, before ART runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.attacks.perturb.estimators import (
    GRADIENTS,
    LABELS,
    SCORES,
    Estimator,
    float32,
    import_art,
)
from movingtarget.errors import ConfigError

NORMS = {"inf": np.inf, "2": 2, "1": 1, "0": 0}


def _norm(value: object) -> str:
    text = str(value).lower().replace("np.", "").replace("l", "")
    return "inf" if text in ("inf", "infinity") else text


@dataclass(frozen=True)
class AttackSpec:
    """One per-input attack: the ART class behind it and what it takes.

    ``build(art_class, estimator, budget, norm, targeted)`` returns the ART attack;
    ``budget`` holds this attack's defaults, overridden by the config.

    Examples
    --------
    >>> PER_INPUT_ATTACKS["fgsm"].needs, PER_INPUT_ATTACKS["fgsm"].norms
    ('gradients', ('inf', '2', '1'))
    """

    name: str
    art_class: str
    needs: str
    norms: tuple[str, ...]
    targeted: str  # "both", "never" or "always"
    budget: dict[str, float | int | str] = field(default_factory=dict)
    build: Callable[..., Any] | None = None
    summary: str = ""
    #: Score-based: ART gets class probabilities; ``"image"``: as images too (ART's
    #: Square takes only image data; flat inputs go as one-channel images).
    view: str = ""

    def describe(self) -> str:
        """One line for ``movingtarget list``."""
        aims = {"both": "targeted or not", "never": "untargeted", "always": "targeted"}
        norms = "/".join(f"L{n}" if n != "inf" else "L∞" for n in self.norms)
        return f"{self.name} ({self.needs}, {norms}, {aims[self.targeted]})"


def _fgsm(cls: type, est: Estimator, b: dict[str, Any], norm: str, targeted: bool) -> Any:
    return cls(
        est.art,
        norm=NORMS[norm],
        eps=float(b["eps"]),
        eps_step=float(b["eps"]),
        targeted=targeted,
        batch_size=int(b["batch_size"]),
    )


def _pgd(cls: type, est: Estimator, b: dict[str, Any], norm: str, targeted: bool) -> Any:
    step = float(b["eps_step"]) if b.get("eps_step") not in (None, "") else float(b["eps"]) / 4
    return cls(
        est.art,
        norm=NORMS[norm],
        eps=float(b["eps"]),
        eps_step=step,
        max_iter=int(b["max_iter"]),
        targeted=targeted,
        num_random_init=int(b["random_init"]),
        batch_size=int(b["batch_size"]),
        verbose=False,
    )


def _jsma(cls: type, est: Estimator, b: dict[str, Any], norm: str, targeted: bool) -> Any:
    return cls(
        est.art,
        theta=float(b["theta"]),
        gamma=float(b["gamma"]),
        batch_size=int(b["batch_size"]),
        verbose=False,
    )


def _cw(cls: type, est: Estimator, b: dict[str, Any], norm: str, targeted: bool) -> Any:
    return cls(
        est.art,
        confidence=float(b["confidence"]),
        targeted=targeted,
        learning_rate=float(b["learning_rate"]),
        binary_search_steps=int(b["binary_search_steps"]),
        max_iter=int(b["max_iter"]),
        initial_const=float(b["initial_const"]),
        batch_size=int(b["batch_size"]),
        verbose=False,
    )


def _deepfool(cls: type, est: Estimator, b: dict[str, Any], norm: str, targeted: bool) -> Any:
    return cls(
        est.art,
        max_iter=int(b["max_iter"]),
        epsilon=float(b["overshoot"]),
        nb_grads=min(int(b["nb_grads"]), est.n_classes),
        batch_size=int(b["batch_size"]),
        verbose=False,
    )


def _hsj(cls: type, est: Estimator, b: dict[str, Any], norm: str, targeted: bool) -> Any:
    return cls(
        est.art,
        batch_size=int(b["batch_size"]),
        targeted=targeted,
        norm=NORMS[norm],
        max_iter=int(b["max_iter"]),
        max_eval=int(b["max_eval"]),
        init_eval=int(b["init_eval"]),
        init_size=int(b["init_size"]),
        verbose=False,
    )


def _square(cls: type, est: Estimator, b: dict[str, Any], norm: str, targeted: bool) -> Any:
    return cls(
        est.art,
        norm=NORMS[norm],
        max_iter=int(b["max_iter"]),
        eps=float(b["eps"]),
        p_init=float(b["p_init"]),
        nb_restarts=int(b["restarts"]),
        batch_size=int(b["batch_size"]),
        verbose=False,
    )


def _simba(cls: type, est: Estimator, b: dict[str, Any], norm: str, targeted: bool) -> Any:
    # the DCT basis needs image inputs (C, H, W); flat inputs use pixel directions
    basis = str(b["basis"])
    if basis == "dct" and len(est.art_shape) != 3:
        basis = "px"
    return cls(
        est.art,
        attack=basis,
        max_iter=int(b["max_iter"]),
        epsilon=float(b["epsilon"]),
        targeted=targeted,
        batch_size=1,  # ART's SimBA takes one input at a time
        verbose=False,
    )


def _boundary(cls: type, est: Estimator, b: dict[str, Any], norm: str, targeted: bool) -> Any:
    return cls(
        est.art,
        batch_size=int(b["batch_size"]),
        targeted=targeted,
        delta=float(b["delta"]),
        epsilon=float(b["epsilon"]),
        max_iter=int(b["max_iter"]),
        num_trial=int(b["num_trial"]),
        init_size=int(b["init_size"]),
        verbose=False,
    )


#: Attack name -> :class:`AttackSpec`.
PER_INPUT_ATTACKS: dict[str, AttackSpec] = {
    s.name: s
    for s in (
        AttackSpec(
            "fgsm",
            "FastGradientMethod",
            GRADIENTS,
            ("inf", "2", "1"),
            "both",
            {"eps": 0.1, "batch_size": 512},
            _fgsm,
            "one step along the loss gradient's sign (Goodfellow et al. 2015)",
        ),
        AttackSpec(
            "pgd",
            "ProjectedGradientDescent",
            GRADIENTS,
            ("inf", "2", "1"),
            "both",
            {"eps": 0.1, "eps_step": "", "max_iter": 20, "random_init": 0, "batch_size": 512},
            _pgd,
            "iterated gradient steps projected on the eps-ball (Madry et al. 2018)",
        ),
        AttackSpec(
            "jsma",
            "SaliencyMapMethod",
            GRADIENTS,
            ("0",),
            "always",
            {"theta": 1.0, "gamma": 0.3, "batch_size": 64},
            _jsma,
            "Jacobian saliency map: a few features to reach a chosen class (Papernot et al. 2016)",
        ),
        AttackSpec(
            "carlini-wagner",
            "CarliniL2Method",
            GRADIENTS,
            ("2",),
            "both",
            {
                "confidence": 0.0,
                "learning_rate": 0.01,
                "binary_search_steps": 5,
                "max_iter": 10,
                "initial_const": 0.01,
                "batch_size": 128,
            },
            _cw,
            "smallest L2 change by optimization (Carlini & Wagner 2017)",
        ),
        AttackSpec(
            "deepfool",
            "DeepFool",
            GRADIENTS,
            ("2",),
            "never",
            {"max_iter": 50, "overshoot": 0.02, "nb_grads": 10, "batch_size": 256},
            _deepfool,
            "steps to the nearest linearized boundary (Moosavi-Dezfooli et al. 2016)",
        ),
        AttackSpec(
            "hopskipjump",
            "HopSkipJump",
            LABELS,
            ("2", "inf"),
            "both",
            {
                "max_iter": 20,
                "max_eval": 1000,
                "init_eval": 100,
                "init_size": 100,
                "batch_size": 64,
            },
            _hsj,
            "decision-based: labels only (Chen et al. 2020)",
        ),
        AttackSpec(
            "square",
            "SquareAttack",
            SCORES,
            ("inf", "2"),
            "never",
            {"eps": 0.1, "max_iter": 100, "p_init": 0.8, "restarts": 1, "batch_size": 128},
            _square,
            "score-based random squares (Andriushchenko et al. 2020)",
            view="image",
        ),
        AttackSpec(
            "simba",
            "SimBA",
            SCORES,
            ("2",),
            "both",
            {"epsilon": 0.1, "max_iter": 1000, "basis": "dct"},
            _simba,
            "score-based orthogonal steps, one input at a time (Guo et al. 2019)",
            view="image",
        ),
        AttackSpec(
            "boundary",
            "BoundaryAttack",
            LABELS,
            ("2",),
            "both",
            {
                "max_iter": 500,
                "delta": 0.01,
                "epsilon": 0.01,
                "num_trial": 25,
                "init_size": 100,
                "batch_size": 64,
            },
            _boundary,
            "decision-based random walk along the boundary (Brendel et al. 2018)",
        ),
    )
}

_ALTERNATIVES = {
    GRADIENTS: "a model with gradients (logistic, cnn, torch-mlp) or a query-based attack "
    "(hopskipjump, boundary: labels; square, simba: scores)",
    SCORES: "a model's scores instead of a defense's answers, or a labels-only attack "
    "(hopskipjump, boundary)",
    LABELS: "",
}


def spec_of(name: str) -> AttackSpec:
    """The :class:`AttackSpec` named ``name``; a :class:`ConfigError` lists the names."""
    try:
        return PER_INPUT_ATTACKS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), PER_INPUT_ATTACKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown per-input attack {name!r}{hint}; known: {', '.join(PER_INPUT_ATTACKS)}"
        ) from None


def check_budget(spec: AttackSpec, budget: dict[str, Any]) -> dict[str, Any]:
    """``spec``'s defaults overridden by ``budget``, checked: known fields, numbers >= 0."""
    unknown = sorted(set(budget) - set(spec.budget))
    if unknown:
        raise ConfigError(
            f"attack {spec.name!r}: unknown budget field {unknown[0]!r}; "
            f"known: {', '.join(spec.budget) or 'none'}"
        )
    merged = {**spec.budget, **budget}
    for key, value in merged.items():
        default = spec.budget[key]
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"attack {spec.name!r}: {key} must be text, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"attack {spec.name!r}: {key} must be a number, got {value!r}")
        if not np.isfinite(value) or value < 0:
            raise ConfigError(f"attack {spec.name!r}: {key} must be >= 0, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and value != int(value):
            raise ConfigError(f"attack {spec.name!r}: {key} must be an integer, got {value!r}")
    if spec.name == "pgd" and merged["eps_step"] not in ("",):
        try:
            if float(merged["eps_step"]) <= 0:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"attack 'pgd': eps_step must be a number > 0, got {merged['eps_step']!r}"
            ) from None
    for key in ("batch_size", "max_iter", "max_eval", "init_size"):
        if key in merged and int(merged[key]) < 1:
            raise ConfigError(f"attack {spec.name!r}: {key} must be >= 1, got {merged[key]!r}")
    return merged


def build_attack(
    name: str,
    estimator: Estimator,
    *,
    norm: str | float | None = None,
    targeted: bool = False,
    **budget: Any,
) -> Any:
    """The ART attack ``name`` on ``estimator`` with ``budget``; the capability it
    needs, the norm and targeting are checked first (one :class:`ConfigError`)."""
    spec = spec_of(name)
    if not estimator.gives(spec.needs):
        offers = ", ".join(estimator.capabilities)
        raise ConfigError(
            f"attack {name!r} needs {spec.needs}; {estimator.source} gives {offers}: "
            f"use {_ALTERNATIVES[spec.needs]}"
        )
    chosen = spec.norms[0] if norm is None else _norm(norm)
    if chosen not in spec.norms:
        raise ConfigError(f"attack {name!r} has norms {', '.join(spec.norms)}, not {norm!r}")
    if targeted and spec.targeted == "never":
        raise ConfigError(f"attack {name!r} is untargeted only")
    merged = check_budget(spec, budget)
    import_art()
    from art.attacks import evasion

    cls = getattr(evasion, spec.art_class)
    assert spec.build is not None
    return spec.build(cls, estimator, merged, chosen, targeted or spec.targeted == "always")


class Crafted:
    """Adversarial examples and what they did.

    ``success[i]``: untargeted, the estimator's class of ``x_adv[i]`` differs from the
    true class (``y``, or the clean prediction when no ``y`` was given); targeted, it
    is ``target[i]``. ``l0`` counts the features changed by more than 1e-6.

    Only ``x_adv`` is made by crafting: the classes (``clean``, ``adv``, ``success``)
    and the distances are computed on first use and kept, so a caller who only wants
    the examples pays for the attack alone (two forward passes less than measuring).
    """

    def __init__(
        self,
        x: NDArray[np.float32],
        x_adv: NDArray[np.float32],
        estimator: Estimator,
        truth: NDArray[np.int64] | None,
        target: NDArray[np.int64] | None = None,
        clean: NDArray[np.int64] | None = None,
    ) -> None:
        self._x, self.x_adv, self._estimator = x, x_adv, estimator
        self._truth, self.target = truth, target
        self._clean = clean
        self._adv: NDArray[np.int64] | None = None
        self._success: NDArray[np.bool_] | None = None
        self._dist: tuple[NDArray[np.float64], ...] | None = None

    @property
    def clean(self) -> NDArray[np.int64]:
        """The estimator's classes of the clean inputs."""
        if self._clean is None:
            self._clean = self._estimator.predict_labels(self._x)
        return self._clean

    @property
    def adv(self) -> NDArray[np.int64]:
        """The estimator's classes of the adversarial examples."""
        if self._adv is None:
            self._adv = self._estimator.predict_labels(self.x_adv)
        return self._adv

    @property
    def success(self) -> NDArray[np.bool_]:
        """Which inputs the attack moved where it aimed (see the class docs)."""
        if self._success is None:
            if self.target is not None:
                self._success = self.adv == self.target
            else:
                truth = self.clean if self._truth is None else self._truth
                self._success = self.adv != truth
        return self._success

    def _distances(self) -> tuple[NDArray[np.float64], ...]:
        if self._dist is None:
            self._dist = distances(self._x, self.x_adv)
        return self._dist

    @property
    def l2(self) -> NDArray[np.float64]:
        """Per-input L2 size of the perturbation."""
        return self._distances()[0]

    @property
    def linf(self) -> NDArray[np.float64]:
        """Per-input L∞ size of the perturbation."""
        return self._distances()[1]

    @property
    def l0(self) -> NDArray[np.float64]:
        """Per-input share of features changed."""
        return self._distances()[2]

    @property
    def success_rate(self) -> float:
        """Share of inputs on which the attack succeeded."""
        return float(self.success.mean()) if len(self.success) else 0.0


def distances(
    x: NDArray[np.floating[Any]], x_adv: NDArray[np.floating[Any]]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per-input L2, L∞ and L0 (share of features changed) of ``x_adv - x``."""
    d = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
    return (
        np.sqrt((d * d).sum(axis=1)),
        np.abs(d).max(axis=1) if d.shape[1] else np.zeros(len(d)),
        (np.abs(d) > 1e-6).mean(axis=1) if d.shape[1] else np.zeros(len(d)),
    )


def craft(
    name: str,
    estimator: Estimator,
    x: NDArray[np.floating[Any]],
    y: NDArray[np.integer[Any]] | None = None,
    *,
    target: NDArray[np.integer[Any]] | None = None,
    norm: str | float | None = None,
    seed: int = 0,
    **budget: Any,
) -> Crafted:
    """Run attack ``name`` on ``x`` (any float dtype: ART gets float32).

    Most of ART's random attacks (Square, SimBA, Boundary, PGD's random start) draw from
    numpy's global generator: it is seeded with ``seed`` for the attack and restored
    after. HopSkipJump draws its starting point from a generator of its own that ART
    does not seed, so its examples vary from call to call.

    ``target``: the class each input should reach (a targeted attack); otherwise the
    attack is untargeted against ``y`` (the true classes; the clean predictions when
    ``None``). A targeted-only attack (``jsma``) without ``target`` aims at a random
    other class, drawn by seed 0.

    Examples
    --------
    >>> import numpy as np
    >>> from movingtarget.datasets import load_digits
    >>> from movingtarget.models import build_model
    >>> split = load_digits().split(seed=0)
    >>> model = build_model("logistic", split)
    >>> from movingtarget.attacks.perturb.estimators import wrap_model
    >>> est = wrap_model(model, clip_values=(0.0, 1.0))
    >>> out = craft("fgsm", est, split.x_test[:50], split.y_test[:50], eps=0.2)
    >>> bool(out.success_rate > 0.5), bool(out.linf.max() <= 0.2 + 1e-6)
    (True, True)
    """
    spec = spec_of(name)
    xs = float32(x)
    judge = estimator  # the classes are read through the model, not an attack's view
    clean = None
    if y is None:
        clean = estimator.predict_labels(xs)
        truth = clean
    else:
        truth = np.asarray(y, dtype=np.int64)
    if target is None and spec.targeted == "always":
        shift = np.random.default_rng(0).integers(1, estimator.n_classes, size=len(xs))
        target = (truth + shift) % estimator.n_classes
    targeted = target is not None
    if spec.view:
        from movingtarget.attacks.perturb.estimators import scores_view

        estimator = scores_view(estimator, image=spec.view == "image")
    attack = build_attack(name, estimator, norm=norm, targeted=targeted, **budget)
    aim = np.asarray(target if targeted else truth, dtype=np.int64)
    if aim.shape != (len(xs),) or (
        len(aim) and (aim.min() < 0 or aim.max() >= estimator.n_classes)
    ):
        raise ConfigError(f"labels must be {len(xs)} classes in [0, {estimator.n_classes})")
    onehot = np.eye(estimator.n_classes, dtype=np.float32)[aim]
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        x_adv = estimator.from_art(attack.generate(x=estimator.to_art(xs), y=onehot))
    finally:
        np.random.set_state(state)
    return Crafted(xs, x_adv, judge, truth, aim if targeted else None, clean)
