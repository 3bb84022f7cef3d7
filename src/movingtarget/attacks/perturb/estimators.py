"""The project's models and defenses as estimators of the Adversarial Robustness Toolbox.

An :class:`Estimator` holds the ART estimator and what it can give an attack:

* ``gradients``: loss and class gradients (a :class:`~movingtarget.models.TorchModel`
  through ART's ``PyTorchClassifier``; a scikit-learn logistic regression, alone or
  behind a ``StandardScaler``, through ART's ``ScikitlearnLogisticRegression`` with the
  scaler as ART preprocessing, so gradients flow through it);
* ``scores``: class probabilities from queries only (any model, as ART's black-box
  classifier over ``predict_proba``);
* ``labels``: one class per query (a **defense**, which answers a class or ABSTAIN).

A defense answers the attack exactly as it would answer the attacker: each batch ART
asks about goes through :meth:`~movingtarget.defenses.Defense.answer` (the defense's
memory sees every query), and an ABSTAIN reaches the attack by the stated rule
``on_abstain``: ``"uniform"`` (a uniform score vector; ART's argmax reads it as class 0,
so an attack may take a refusal for a class-0 answer), an integer class (a refusal read
as that class), or ``"raise"`` (:class:`Refused`: the attack stops, for callers that
retry around refusals). The rule decides what a run measures; reports name it.

ART 1.20.1 imports ``packaging`` without declaring it, and with numpy 2 some of its
attacks fail on float64 inputs: :func:`import_art` checks the first, and every array
this package hands ART is float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget._optional import require
from movingtarget.answers import ABSTAIN
from movingtarget.errors import ConfigError

GRADIENTS = "gradients"
SCORES = "scores"
LABELS = "labels"

#: The estimator capabilities, strongest first: each implies the ones after it.
CAPABILITIES = (GRADIENTS, SCORES, LABELS)


def import_art() -> ModuleType:
    """The ``art`` package, or one clear error naming the ``attacks`` extra.

    ART imports ``packaging`` at import time without declaring it as a dependency; the
    ``attacks`` extra installs both, and a missing one is reported by name.
    """
    require("packaging", "per-input attacks (the Adversarial Robustness Toolbox imports it)")
    return require("art", "per-input attacks")


def float32(x: object) -> NDArray[np.float32]:
    """``x`` as a C-contiguous float32 array (ART with numpy 2 needs one dtype)."""
    return np.ascontiguousarray(x, dtype=np.float32)


def data_range(x: NDArray[np.floating[Any]]) -> tuple[float, float]:
    """``(min, max)`` of ``x``: the clip values of attacks on that data."""
    return float(np.min(x)), float(np.max(x))


class Refused(RuntimeError):
    """A defense abstained on a query an attack asked (``on_abstain="raise"``)."""


@dataclass
class Estimator:
    """An ART estimator and what it offers.

    ``shape`` is the shape of one input as the project sees it; ``art_shape`` as ART
    sees it (scikit-learn estimators take flat rows). :meth:`to_art` and
    :meth:`from_art` convert batches between the two.

    Examples
    --------
    >>> import numpy as np
    >>> class Two:
    ...     n_classes = 2
    ...     def predict_proba(self, x):
    ...         p = (x.reshape(len(x), -1).mean(axis=1) > 0.5).astype(float)
    ...         return np.stack([1 - p, p], axis=1)
    >>> est = wrap_model(Two(), clip_values=(0.0, 1.0), input_shape=(2, 2))
    >>> est.capabilities
    ('scores', 'labels')
    >>> est.predict_labels(np.ones((3, 2, 2))).tolist()
    [1, 1, 1]
    """

    art: Any
    capabilities: tuple[str, ...]
    source: str
    clip_values: tuple[float, float]
    shape: tuple[int, ...]
    art_shape: tuple[int, ...]
    n_classes: int
    #: For a wrapped defense: what it answered the attack (queries, refusals).
    oracle: DefenseOracle | None = None

    def gives(self, capability: str) -> bool:
        """Whether this estimator offers ``capability`` (or a stronger one)."""
        return capability in self.capabilities

    def to_art(self, x: object) -> NDArray[np.float32]:
        """A batch in the estimator's own shape, float32."""
        return float32(x).reshape((-1, *self.art_shape))

    def from_art(self, x: object) -> NDArray[np.float32]:
        """A batch back in the project's shape."""
        return float32(x).reshape((-1, *self.shape))

    def predict_labels(self, x: object, batch_size: int = 512) -> NDArray[np.int64]:
        """The class ART reads for each input (the argmax of its prediction)."""
        proba = self.art.predict(self.to_art(x), batch_size=batch_size)
        return np.asarray(proba).argmax(axis=1).astype(np.int64)


def _shape_of(model: Any, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    shape = input_shape or getattr(model, "input_shape", None)
    if not shape:
        n = getattr(model, "n_features", None)
        shape = (int(n),) if n else None
    if not shape:
        raise ConfigError("the model does not say its input shape: pass input_shape")
    return tuple(int(s) for s in shape)


def _logistic_parts(model: Any) -> tuple[Any, Any] | None:
    """``(LogisticRegression, StandardScaler or None)`` of a scikit-learn model that ART
    can differentiate, else None."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    est = getattr(model, "estimator", None)
    scaler = None
    if isinstance(est, Pipeline):
        steps = [s for _, s in est.steps if s not in (None, "passthrough")]
        if len(steps) == 2 and isinstance(steps[0], StandardScaler):
            scaler, est = steps
        elif len(steps) == 1:
            est = steps[0]
        else:
            return None
    if not isinstance(est, LogisticRegression):
        return None
    n = int(model.n_classes)
    if len(est.classes_) != n or not (np.asarray(est.classes_) == np.arange(n)).all():
        return None  # ART's columns would not be the project's classes
    return est, scaler


def _float32_module(torch: Any, module: Any) -> Any:
    """``module`` behind a float32 cast: some ART attacks (HopSkipJump) build float64
    arrays of their own with numpy 2 and hand them to the network, which then fails on
    mismatched dtypes. The cast is differentiable, so gradients are unchanged."""

    class Float32(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            return self.inner(x.float())

    return Float32(module)


def wrap_model(
    model: Any,
    *,
    clip_values: tuple[float, float],
    input_shape: tuple[int, ...] | None = None,
    gradients: bool = True,
) -> Estimator:
    """``model`` as an ART estimator: with gradients where it has them (``gradients``
    False forces the black-box route), else scores from ``predict_proba``."""
    from movingtarget.models.files import file_info
    from movingtarget.models.torch import TorchModel

    info = file_info(model)
    # a model file says which route it took: gradients (a PyTorch program) or scores only
    origin = f"{info.format} file {info.path}" if info is not None else None
    shape = _shape_of(model, input_shape)
    lo, hi = float(clip_values[0]), float(clip_values[1])
    if not lo < hi:
        raise ConfigError(f"clip values must have min < max, got {clip_values!r}")
    n = int(model.n_classes)
    if gradients and isinstance(model, TorchModel):
        import_art()
        import torch
        from art.estimators.classification import PyTorchClassifier

        device = "gpu" if str(model.device).startswith("cuda") else "cpu"
        clf = PyTorchClassifier(
            model=_float32_module(torch, model.module),
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=shape,
            nb_classes=n,
            clip_values=(lo, hi),
            device_type=device,
        )
        source = f"{origin} (gradients through PyTorch)" if origin else "torch model"
        return Estimator(clf, CAPABILITIES, source, (lo, hi), shape, shape, n)
    parts = _logistic_parts(model) if gradients else None
    if parts is not None:
        import_art()
        from art.estimators.classification.scikitlearn import ScikitlearnLogisticRegression

        lr, scaler = parts
        width = int(np.prod(shape))
        preprocessing = (
            (0.0, 1.0)
            if scaler is None
            else (float32(scaler.mean_), float32(np.where(scaler.scale_ > 0, scaler.scale_, 1.0)))
        )
        clf = ScikitlearnLogisticRegression(lr, clip_values=(lo, hi), preprocessing=preprocessing)
        return Estimator(clf, CAPABILITIES, "logistic regression", (lo, hi), shape, (width,), n)
    source = (
        f"{origin} (no gradients: ART's black-box estimator, scores only)"
        if origin
        else f"{type(model).__name__} (no gradients)"
    )
    return wrap_black_box(
        lambda x: np.asarray(model.predict_proba(x), dtype=np.float32),
        shape=shape,
        n_classes=n,
        clip_values=(lo, hi),
        source=source,
    )


def wrap_black_box(
    predict: Callable[[NDArray[np.float32]], NDArray[np.float32]],
    *,
    shape: tuple[int, ...],
    n_classes: int,
    clip_values: tuple[float, float],
    source: str,
    capabilities: tuple[str, ...] = (SCORES, LABELS),
) -> Estimator:
    """A function ``predict(x) -> (n, k) scores`` as ART's black-box classifier (the
    neural-network flavour, which score-based attacks such as Square and SimBA take)."""
    import_art()
    from art.estimators.classification import BlackBoxClassifierNeuralNetwork

    def predict_fn(x: NDArray[np.float32]) -> NDArray[np.float32]:
        return float32(predict(float32(x).reshape((-1, *shape))))

    clf = BlackBoxClassifierNeuralNetwork(
        predict_fn, input_shape=shape, nb_classes=n_classes, clip_values=clip_values
    )
    return Estimator(clf, capabilities, source, clip_values, shape, shape, n_classes)


def image_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` as ART image data: a 3-d shape as it is, else one channel ``(1, h, w)``
    with ``h * w = d`` as square as ``d`` allows (a :class:`ConfigError` when ``h < 2``).

    >>> image_shape((64,)), image_shape((57,))
    ((1, 8, 8), (1, 3, 19))
    """
    if len(shape) == 3:
        return tuple(shape)
    d = int(np.prod(shape))
    h = max(k for k in range(1, int(np.sqrt(d)) + 1) if d % k == 0)
    if h < 2:
        raise ConfigError(f"inputs of {d} features cannot be seen as an image for this attack")
    return (1, h, d // h)


def scores_view(est: Estimator, *, image: bool = False) -> Estimator:
    """``est`` as a black box of class *probabilities* (a network's logits go through a
    softmax), for score-based attacks that check for probabilities (ART's SimBA).

    ``image``: flat inputs are seen as one-channel images ``(1, h, w)`` with ``h * w = d``
    as square as ``d`` allows, for attacks that take only image data (ART's Square,
    whose tiles need both sides > 1).
    """
    shape = image_shape(est.art_shape) if image else est.art_shape

    def proba(x: NDArray[np.float32]) -> NDArray[np.float32]:
        out = np.asarray(est.art.predict(est.to_art(x)), dtype=np.float64)
        # already probabilities? (one reduction each: this runs once per query)
        if not len(out) or abs(out.sum(axis=1) - 1.0).max() > 1e-3 or out.min() < 0:
            out = np.exp(out - out.max(axis=1, keepdims=True))
            out /= out.sum(axis=1, keepdims=True)
        return out.astype(np.float32)

    view = wrap_black_box(
        proba,
        shape=shape,
        n_classes=est.n_classes,
        clip_values=est.clip_values,
        source=est.source,
        capabilities=tuple(c for c in est.capabilities if c != GRADIENTS),
    )
    view.shape = est.shape
    view.oracle = est.oracle
    return view


def abstain_rule(on_abstain: str | int, n_classes: int) -> str | int:
    """``on_abstain`` checked: ``"uniform"``, ``"raise"`` or a class in ``[0, k)``."""
    if isinstance(on_abstain, str) and on_abstain in ("uniform", "raise"):
        return on_abstain
    is_int = isinstance(on_abstain, (int, np.integer)) and not isinstance(on_abstain, bool)
    if is_int and 0 <= int(on_abstain) < n_classes:
        return int(on_abstain)
    raise ConfigError(
        f"on_abstain must be 'uniform', 'raise' or a class in [0, {n_classes}), got {on_abstain!r}"
    )


class DefenseOracle:
    """What an attacker sees of a defense: each query answered, an ABSTAIN mapped by
    ``on_abstain``; counts the queries and refusals (plain callable, ``(n, k)`` scores).

    Examples
    --------
    >>> import numpy as np
    >>> from movingtarget.defenses import build_defense
    >>> class Two:
    ...     n_classes = 2
    ...     def predict_proba(self, x):
    ...         return np.tile([0.2, 0.8], (len(x), 1))
    >>> oracle = DefenseOracle(build_defense("memorize-abstain", Two()), client=3)
    >>> oracle(np.zeros((2, 4), np.float32)).tolist()  # the second is a repeat
    [[0.0, 1.0], [0.5, 0.5]]
    >>> oracle.queries, oracle.refused
    (2, 1)
    """

    def __init__(self, defense: Any, *, on_abstain: str | int = "uniform", client: int = 0):
        self.defense = defense
        self.n_classes = int(defense.n_classes)
        self.on_abstain = abstain_rule(on_abstain, self.n_classes)
        self.client = int(client)
        self.queries = 0
        self.refused = 0

    def __call__(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        answers = self.defense.answer(x, np.full(len(x), self.client, dtype=np.int64))
        labels = np.asarray(answers.labels)
        refused = labels == ABSTAIN
        self.queries += len(labels)
        self.refused += int(refused.sum())
        if refused.any() and self.on_abstain == "raise":
            raise Refused(f"the defense abstained on {int(refused.sum())} of {len(labels)} queries")
        out = np.zeros((len(labels), self.n_classes), dtype=np.float32)
        answered = np.flatnonzero(~refused)
        out[answered, labels[answered]] = 1.0
        if refused.any():
            if self.on_abstain == "uniform":
                out[refused] = 1.0 / self.n_classes
            else:
                out[refused, int(self.on_abstain)] = 1.0
        return out


def wrap_defense(
    defense: Any,
    *,
    clip_values: tuple[float, float],
    input_shape: tuple[int, ...] | None = None,
    on_abstain: str | int = "uniform",
    client: int = 0,
) -> Estimator:
    """A defense as a labels-only ART estimator: every query an attack makes is answered
    by ``defense`` (see :class:`DefenseOracle`; ``estimator.art.predict`` goes through
    it), an ABSTAIN reaching the attack by the rule ``on_abstain``."""
    shape = _shape_of(defense.model, input_shape)
    oracle = DefenseOracle(defense, on_abstain=on_abstain, client=client)
    est = wrap_black_box(
        oracle,
        shape=shape,
        n_classes=oracle.n_classes,
        clip_values=clip_values,
        source=f"defense {getattr(defense, 'name', '')!r} (answers only)",
        capabilities=(LABELS,),
    )
    est.oracle = oracle
    return est
