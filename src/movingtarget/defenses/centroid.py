"""Detection by centroid closeness: abstain on inputs that look adversarial.

Papernot and McDaniel (2016) suggest scoring each input's likelihood of being
adversarial, "for example closeness to the centroid of a non-selected class". An
input pushed across a decision boundary by a small perturbation (FGSM, PGD, ...) keeps
most of its source class's features: in a feature space it sits *far* from the
centroid of the class the model now picks and *close* to the centroid of another one.

With ``c`` the class the model picked, ``d_c`` the distance of the input's features to
the centroid of ``c`` and ``d_o`` the distance to the nearest centroid of any *other*
class, the score is

    score = d_c / (d_c + d_o)          in [0, 1]; higher = more likely adversarial

(0 on the centroid of ``c``; 0.5 half-way between two centroids). Benign inputs the
model classifies well score low; the mechanism abstains above a threshold calibrated
on benign data for a stated false-alarm rate.

Feature space
    For a torch model (:class:`~movingtarget.models.torch.TorchModel`, anything with a
    ``.module`` that is a ``torch.nn.Module``): the model's *penultimate* features, the
    input of the **last** ``torch.nn.Linear`` in ``module.modules()`` (registration
    order), read with a forward hook, so any module works, not only
    ``nn.Sequential``. A torch module without a ``Linear`` layer is a
    :class:`ConfigError`. Any other model: the inputs themselves, flattened and
    standardized per feature with the mean and standard deviation of the calibration
    data (features that are constant there keep unit scale).

Calibration
    :meth:`CentroidDetector.calibrate` (called by
    :func:`~movingtarget.defenses.near_repeat.calibrate_defense`, as experiments and the
    gateway do) gets benign inputs *without labels*: each class's centroid is the mean
    feature vector of the reference inputs (the training inputs, where the caller has
    them; else the calibration inputs) the model assigns to that class (its argmax).
    Pass ``labels=`` to use true labels instead. The threshold is the
    ``(1 - false_alarm)`` empirical quantile of the calibration inputs' scores, chosen
    so that at most ``floor(false_alarm * n)`` of them score above it. A class with no
    calibration input has no centroid: an answer of that class scores 1 (the model
    never gave it on benign data), and it is never the nearest other class.
    It must be calibrated on benign inputs the model did not train on: its own training
    inputs score lower than new ones, so a threshold chosen on them comes out low and the
    benign false-alarm rate on new traffic runs above ``false_alarm`` (on digits, an MLP
    calibrated on its training inputs for 5 % raised 11.9 % on the test split). The
    detector says so with ``calibrate_on = "unseen"``: experiments calibrate it on one
    half of the benign pool and report its alarm rate on the other half, ``movingtarget
    resilience`` on test inputs outside the measured sample, and the gateway on the
    served dataset's test split (see ``docs/defenses.md``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN, MODEL, Reason
from movingtarget.defenses.base import Context
from movingtarget.errors import ConfigError
from movingtarget.memory.fingerprints.calibration import TARGET_RATE, Calibration

_ADVERSARIAL = int(Reason.ADVERSARIAL_LIKELIHOOD)

__all__ = ["CentroidDetector", "PenultimateFeatures", "StandardizedFeatures"]


class PenultimateFeatures:
    """The input of a torch model's last ``torch.nn.Linear`` layer (forward hook).

    Examples
    --------
    >>> import torch
    >>> from movingtarget.models.torch import TorchModel
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    >>> PenultimateFeatures(TorchModel(net, 3, device="cpu"))(np.zeros((2, 4))).shape
    (2, 6)
    """

    def __init__(self, model: Any) -> None:
        import torch

        module = getattr(model, "module", None)
        if not isinstance(module, torch.nn.Module):
            raise ConfigError("centroid: penultimate features need a torch model")
        linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise ConfigError(
                f"centroid: cannot find the penultimate layer of {type(module).__name__}: "
                "it has no torch.nn.Linear layer (the features are the last Linear's input)"
            )
        self._module, self._last = module, linears[-1]
        self._device = getattr(model, "device", "cpu")
        self._batch = int(getattr(model, "batch_size", 1024))
        self.dim = int(self._last.in_features)

    def fit(self, x: NDArray[np.generic]) -> None:
        """Nothing to fit: the network is the feature map."""

    def __call__(self, x: NDArray[np.generic]) -> NDArray[np.float64]:
        import torch

        arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        out = np.empty((len(arr), self.dim), dtype=np.float64)
        captured: list[Any] = []
        hook = self._last.register_forward_hook(lambda m, inp, o: captured.append(inp[0]))
        try:
            with torch.no_grad():
                for start in range(0, len(arr), self._batch):
                    chunk = torch.from_numpy(arr[start : start + self._batch]).to(self._device)
                    captured.clear()
                    self._module(chunk)
                    # the last call of the last Linear is the one that fed the logits
                    feats = captured[-1].reshape(len(chunk), -1).double().cpu().numpy()
                    out[start : start + len(chunk)] = feats
        finally:
            hook.remove()
        return out


class StandardizedFeatures:
    """Flattened inputs standardized with the calibration data's per-feature mean/std.

    Examples
    --------
    >>> f = StandardizedFeatures()
    >>> f.fit(np.array([[0.0, 1.0], [2.0, 1.0]]))
    >>> f(np.array([[1.0, 3.0]])).tolist()       # the constant feature keeps unit scale
    [[0.0, 2.0]]
    """

    def __init__(self) -> None:
        self.mean: NDArray[np.float64] | None = None
        self.scale: NDArray[np.float64] | None = None

    def fit(self, x: NDArray[np.generic]) -> None:
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        std = flat.std(axis=0)
        self.mean = flat.mean(axis=0)
        self.scale = np.where(std > 0, std, 1.0)

    def __call__(self, x: NDArray[np.generic]) -> NDArray[np.float64]:
        if self.mean is None or self.scale is None:
            raise ConfigError("centroid: standardized features are fitted by calibration")
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return (flat - self.mean) / self.scale


def _is_torch(model: Any) -> bool:
    module = getattr(model, "module", None)
    return module is not None and type(module).__module__.startswith("torch")


class CentroidDetector:
    """Filter: ABSTAIN on model answers whose centroid score is above a threshold
    calibrated for a benign false-alarm rate (reason ``adversarial-likelihood``).

    The score of an input answered ``c`` is ``d_c / (d_c + d_o)``: its distance to the
    centroid of ``c`` over that plus its distance to the nearest centroid of a class
    other than ``c`` (see the module docs for the feature space and calibration). A
    filter: it runs after the decision and only touches answers the model gave. It
    must be calibrated before it answers (experiments and the gateway calibrate on
    training inputs; by hand, :meth:`calibrate` or
    :func:`~movingtarget.defenses.near_repeat.calibrate_defense`).

    Parameters
    ----------
    false_alarm:
        Benign false-alarm rate the threshold is calibrated for, in (0, 1); default
        0.1 % (as the near-repeat memory).

    Examples
    --------
    >>> import numpy as np
    >>> from movingtarget.defenses import Defense, Argmax
    >>> class Side:                     # class 1 when the first feature is positive
    ...     n_classes = 2
    ...     def predict_proba(self, x):
    ...         p = (x[:, 0] > 0).astype(float)
    ...         return np.stack([1 - p, p], axis=1)
    >>> rng = np.random.default_rng(0)
    >>> benign = np.concatenate([rng.normal(-3, 1, (200, 2)), rng.normal(3, 1, (200, 2))])
    >>> detector = CentroidDetector(false_alarm=0.01)
    >>> d = Defense(Side(), [Argmax(), detector])
    >>> cal = detector.calibrate(benign.astype(np.float32), model=d.model)
    >>> cal.calibration_rate <= 0.01
    True
    >>> # x = (3, 3) is typical of class 1; x = (0.5, -3) is answered 1 but lies near class 0
    >>> d.answer(np.array([[3.0, 3.0], [0.5, -3.0]])).reason_labels()
    ['model', 'adversarial-likelihood']
    >>> detector.describe()
    'centroid(false_alarm=0.01)'
    """

    role = "filter"
    #: It cannot answer before :meth:`calibrate` (the gateway refuses to start without).
    requires_calibration = True
    #: Calibrated on benign inputs the model did not train on (see the module docs).
    calibrate_on = "unseen"

    def __init__(self, false_alarm: float = TARGET_RATE) -> None:
        if isinstance(false_alarm, bool) or not isinstance(false_alarm, (int, float)):
            raise ConfigError(f"centroid: false_alarm must be a number, got {false_alarm!r}")
        if not 0 < false_alarm < 1:
            raise ConfigError(f"centroid: false_alarm must be in (0, 1), got {false_alarm!r}")
        self.false_alarm = float(false_alarm)
        self.threshold: float | None = None
        self.centroids: NDArray[np.float64] | None = None
        self.calibration: Calibration | None = None
        self._features: PenultimateFeatures | StandardizedFeatures | None = None
        self._model: Any = None
        self._has: NDArray[np.bool_] | None = None
        self._norms: NDArray[np.float64] | None = None

    # -- fitting ------------------------------------------------------------------
    def calibrate(
        self,
        x_benign: NDArray[np.generic],
        x_heldout: NDArray[np.generic] | None = None,
        *,
        model: Any = None,
        seed: int = 0,
        labels: NDArray[np.integer[Any]] | None = None,
        reference: NDArray[np.generic] | None = None,
    ) -> Calibration:
        """Fit the feature scaling and the centroids on benign ``reference`` inputs if
        given (classes: ``labels`` if given, else the model's argmax), else on
        ``x_benign``; choose the threshold for ``false_alarm`` on the scores of
        ``x_benign``; report the alarm rate on ``x_heldout``. With a ``reference`` (such
        as the training inputs) the centroids and the threshold come from independent
        data: centroids fitted on the threshold's own inputs sit closer to them than to
        new ones, and the alarm rate on new traffic runs above ``false_alarm``.
        ``seed`` is unused (deterministic)."""
        if model is None:
            raise ConfigError("centroid: calibration needs the model (model=...)")
        x = np.asarray(x_benign)
        if len(x) < 2:
            raise ConfigError("centroid: calibration needs at least 2 benign inputs")
        fit_x = x if reference is None else np.asarray(reference)
        if len(fit_x) < 2:
            raise ConfigError("centroid: the reference needs at least 2 benign inputs")
        k = int(model.n_classes)
        features = PenultimateFeatures(model) if _is_torch(model) else StandardizedFeatures()
        features.fit(fit_x)
        f_fit = features(fit_x)
        if labels is None:
            cls = self._argmax(model, fit_x)
        else:
            cls = np.asarray(labels, dtype=np.int64).reshape(-1)
            if cls.shape != (len(fit_x),) or cls.min() < 0 or cls.max() >= k:
                raise ConfigError(
                    f"centroid: labels must be {len(fit_x)} class indices in [0, {k}), "
                    f"got shape {cls.shape}"
                )
        counts = np.bincount(cls, minlength=k)
        sums = np.zeros((k, f_fit.shape[1]))
        np.add.at(sums, cls, f_fit)
        has = counts > 0
        centroids = np.zeros_like(sums)
        centroids[has] = sums[has] / counts[has, None]
        self._features, self._model = features, model
        self.centroids, self._has = centroids, has
        self._norms = (centroids**2).sum(axis=1)
        f = f_fit if reference is None else features(x)
        scores = self._score(f, self._argmax(model, x))
        n = len(scores)
        allowed = math.floor(self.false_alarm * n)  # at most this many benign alarms
        self.threshold = float(np.sort(scores)[n - allowed - 1])
        cal_rate = float((scores > self.threshold).mean())
        held_rate, held_se, n_held = float("nan"), float("nan"), 0
        if x_heldout is not None and len(x_heldout):
            alarms = self.score(np.asarray(x_heldout)) > self.threshold
            n_held = len(alarms)
            held_rate = float(alarms.mean())
            held_se = math.sqrt(held_rate * (1 - held_rate) / n_held)
        self.calibration = Calibration(
            "centroid", "threshold", self.threshold, self.false_alarm,
            cal_rate, n, held_rate, held_se, n_held,
        )  # fmt: skip
        return self.calibration

    @staticmethod
    def _argmax(model: Any, x: NDArray[np.generic]) -> NDArray[np.int64]:
        return np.asarray(model.predict_proba(x)).argmax(axis=1).astype(np.int64)

    # -- scoring ------------------------------------------------------------------
    def _fitted(self) -> tuple[Any, NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]:
        if (
            self._features is None
            or self.centroids is None
            or self._has is None
            or self._norms is None
        ):
            raise ConfigError(
                "centroid: not calibrated; calibrate it on benign inputs first "
                "(calibrate_defense(defense, x_benign); experiments and the gateway "
                "calibrate automatically)"
            )
        return self._features, self.centroids, self._has, self._norms

    def _score(self, f: NDArray[np.float64], cls: NDArray[np.int64]) -> NDArray[np.float64]:
        _, centroids, has, norms = self._fitted()
        # squared distances to every centroid at once: |f|^2 - 2 f.C + |C|^2
        d2 = (f**2).sum(axis=1)[:, None] - 2.0 * f @ centroids.T + norms[None, :]
        dist = np.sqrt(np.maximum(d2, 0.0))
        dist[:, ~has] = np.inf  # a class without a centroid is never the nearest
        rows = np.arange(len(f))
        d_c = dist[rows, cls].copy()
        dist[rows, cls] = np.inf
        d_o = dist.min(axis=1)
        total = d_c + d_o
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.where(total > 0, d_c / total, 0.5)
        score[~has[cls]] = 1.0  # the model never gave this class on benign data
        return np.asarray(score, dtype=np.float64)

    def score(
        self, x: NDArray[np.generic], classes: NDArray[np.integer[Any]] | None = None
    ) -> NDArray[np.float64]:
        """Scores ``d_c / (d_c + d_o)`` of a batch ``x`` (higher: more likely
        adversarial); ``c`` is ``classes`` if given, else the calibrated model's argmax."""
        features, _, _, _ = self._fitted()
        arr = np.asarray(x)
        cls = (
            self._argmax(self._model, arr)
            if classes is None
            else np.asarray(classes, dtype=np.int64).reshape(-1)
        )
        return self._score(features(arr), cls)

    # -- the filter ---------------------------------------------------------------
    def __call__(self, ctx: Context) -> None:
        self._fitted()
        answered = ctx.answers.reasons == MODEL
        if not answered.any():
            return
        idx = np.flatnonzero(answered)
        scores = self.score(ctx.x[idx], ctx.answers.labels[idx])
        assert self.threshold is not None
        flagged = idx[scores > self.threshold]
        if len(flagged):
            ctx.answers.labels[flagged] = ABSTAIN
            ctx.answers.reasons[flagged] = _ADVERSARIAL

    def reset(self) -> None:
        """Nothing learned while deployed (the calibration is kept)."""

    def describe(self) -> str:
        return f"centroid(false_alarm={self.false_alarm:g})"
