"""Approximate memorization: the next step of the arms race after exact memorization.

The attacker re-sends its mistake with fresh small noise, so no two queries are
byte-identical; this gate remembers queries approximately and, on a near repeat,
ABSTAINs (``on_repeat="abstain"``) or answers a uniformly random class
(``on_repeat="random"``). Two ways to remember:

* ``fingerprint="robust"``: noise-robust band keys
  (:class:`~movingtarget.memory.fingerprints.robust.RobustFingerprint`) in any store, so the
  memory can be persistent (SQLite) or shared between replicas (Redis);
* ``fingerprint="neighbours"``: embeddings in a FAISS index, a near repeat lying
  within a radius calibrated on benign data
  (:class:`~movingtarget.memory.fingerprints.neighbours.NeighbourMemory`).
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN, Reason
from movingtarget.defenses.base import Context
from movingtarget.errors import ConfigError
from movingtarget.memory.fingerprints.calibration import (
    TARGET_RATE,
    Calibration,
    calibrate_radius,
    calibrate_robust,
    measure_robust,
)
from movingtarget.memory.fingerprints.neighbours import (
    INDEXES,
    Encoder,
    NeighbourMemory,
    PCAEncoder,
    PenultimateEncoder,
    RandomProjectionEncoder,
)
from movingtarget.memory.fingerprints.robust import RobustFingerprint
from movingtarget.memory.stores import InProcessStore, Store
from movingtarget.memory.stores.redaction import redact
from movingtarget.memory.tenancy import observe_from

ON_REPEAT = ("abstain", "random")
#: Defaults of the settings that :meth:`NearRepeat.describe` names when they differ.
_DEFAULTS: dict[str, Any] = dict(
    store=None, bands=16, rows=12, width=0.1, threshold=1, calibrate_width=True, radius=None,
    radius_scale=1.0, index="flat", encoder="auto", dim=64, target_rate=TARGET_RATE,
)  # fmt: skip
FINGERPRINTS = ("robust", "neighbours")
ENCODERS = ("auto", "random", "pca", "penultimate")


class NearRepeat:
    """Gate that catches approximate repeats of earlier queries (from any client).

    Parameters
    ----------
    on_repeat:
        ``"abstain"`` or ``"random"`` (a uniformly random class).
    fingerprint:
        ``"robust"`` (band keys in a store) or ``"neighbours"`` (a FAISS index).
    store:
        Robust only: a :class:`~movingtarget.memory.stores.Store` or a store URL
        (``memory://``, ``sqlite:///PATH``, ``redis://HOST:PORT/DB``); default in-process.
    bands, rows, width, threshold:
        Robust fingerprint settings (see :class:`RobustFingerprint`); ``width`` is
        re-chosen by :meth:`calibrate` unless ``calibrate_width=False``.
    radius:
        Neighbours only: the match radius in embedding space (None: set by :meth:`calibrate`).
    radius_scale:
        Neighbours only: serve ``radius_scale`` times the calibrated radius (above 1: more
        noise caught, more benign false matches; the rates are measured at that radius).
    index:
        Neighbours only: ``"flat"`` (exact) or ``"hnsw"`` (approximate).
    encoder:
        Neighbours only: ``"auto"`` (the penultimate layer of a torch model, else a random
        projection), ``"random"``, ``"pca"`` (fitted at calibration) or ``"penultimate"``.
    dim:
        Embedding size of the random projection and PCA encoders.
    target_rate:
        Benign false-match rate that :meth:`calibrate` aims for (default 0.1 %).

    Examples
    --------
    >>> import numpy as np
    >>> from movingtarget.defenses import Defense, Argmax
    >>> class Half:
    ...     n_classes = 2
    ...     def predict_proba(self, x):
    ...         return np.tile([0.3, 0.7], (len(x), 1))
    >>> x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    >>> noisy = np.clip(x[:1] + 2 / 255, 0, 1)     # the first query again, with noise
    >>> d = Defense(Half(), [NearRepeat(secret=b"s"), Argmax()])
    >>> d.answer(np.concatenate([x, noisy])).labels.tolist()
    [1, 1, -1]
    >>> d.describe()
    'near-repeat(on_repeat=abstain, fingerprint=robust) > argmax'
    >>> NearRepeat(width=0.4, calibrate_width=False).describe()   # settings off the defaults
    'near-repeat(on_repeat=abstain, fingerprint=robust, width=0.4, calibrate_width=False)'
    """

    role = "gate"

    def __init__(
        self,
        on_repeat: str = "abstain",
        *,
        fingerprint: str = "robust",
        store: Store | str | None = None,
        secret: bytes | str | None = None,
        bands: int = 16,
        rows: int = 12,
        width: float = 0.1,
        threshold: int = 1,
        calibrate_width: bool = True,
        radius: float | None = None,
        radius_scale: float = 1.0,
        index: str = "flat",
        encoder: str = "auto",
        dim: int = 64,
        target_rate: float = TARGET_RATE,
    ) -> None:
        choices = [
            ("on_repeat", on_repeat, ON_REPEAT),
            ("fingerprint", fingerprint, FINGERPRINTS),
            ("index", index, INDEXES),
            ("encoder", encoder, ENCODERS),
        ]
        for field, value, allowed in choices:
            if value not in allowed:
                raise ConfigError(f"near-repeat: {field} must be one of {allowed}, got {value!r}")
        if radius is not None and not radius >= 0:
            raise ConfigError(f"near-repeat: radius must be >= 0, got {radius!r}")
        if not radius_scale > 0:
            raise ConfigError(f"near-repeat: radius_scale must be > 0, got {radius_scale!r}")
        self._radius_scale = float(radius_scale)
        if not 0 < target_rate < 1:
            raise ConfigError(f"near-repeat: target_rate must be in (0, 1), got {target_rate!r}")
        self.on_repeat, self.kind = on_repeat, fingerprint
        given = dict(
            store=redact(store) if isinstance(store, str) else None,  # no passwords
            bands=bands, rows=rows, width=width, threshold=threshold,
            calibrate_width=calibrate_width, radius=radius, radius_scale=radius_scale,
            index=index, encoder=encoder, dim=dim, target_rate=target_rate,
        )  # fmt: skip
        # the settings describe() names: those that differ from the defaults
        self._settings = {k: v for k, v in given.items() if v != _DEFAULTS[k]}
        self.target_rate = float(target_rate)
        self.calibration: Calibration | None = None
        self._secret = secret
        self._robust_params: dict[str, Any] = dict(
            bands=bands, rows=rows, threshold=threshold, secret=secret
        )
        self._calibrate_width = bool(calibrate_width)
        self.fingerprint: RobustFingerprint | None = None
        self.store: Store | None = None
        self.memory: NeighbourMemory | None = None
        if fingerprint == "robust":
            self.fingerprint = RobustFingerprint(width=width, **self._robust_params)
            self.store = _open(store)
        else:
            if store is not None:
                raise ConfigError(
                    "near-repeat: store is for fingerprint=robust; neighbour memory stays in "
                    "this process"
                )
            self._encoder_name, self._dim, self._index = encoder, int(dim), index
            self._radius = radius
            self.memory = None  # built on first use or at calibration (needs the model)

    # -- neighbours -------------------------------------------------------------
    def _make_encoder(self, model: Any) -> Encoder:
        name = self._encoder_name
        if name == "auto":
            name = "penultimate" if _is_torch(model) else "random"
        if name == "penultimate":
            return PenultimateEncoder(model)
        if name == "pca":
            return PCAEncoder(self._dim)
        return RandomProjectionEncoder(self._dim, seed=_seed_of(self._secret))

    def _memory(self, model: Any) -> NeighbourMemory:
        if self.memory is None:
            if self._radius is None:
                raise ConfigError(
                    "near-repeat: fingerprint=neighbours needs radius=... or calibration on "
                    "benign data first (experiments calibrate automatically)"
                )
            encoder = self._make_encoder(model)
            if isinstance(encoder, PCAEncoder):
                raise ConfigError(
                    "near-repeat: encoder=pca is fitted by calibration; calibrate first"
                )
            self.memory = NeighbourMemory(encoder, radius=self._radius, index=self._index)
        return self.memory

    # -- calibration ------------------------------------------------------------
    def calibrate(
        self,
        x_benign: NDArray[np.generic],
        x_heldout: NDArray[np.generic] | None = None,
        *,
        model: Any = None,
        seed: int = 0,
    ) -> Calibration:
        """Choose the width (robust) or radius (neighbours) on benign queries for
        ``target_rate``; report the rate on ``x_heldout``. A robust store is left as it is
        (it may be shared): keys made with another width simply never match again; the
        neighbour memory starts empty."""
        if self.kind == "robust":
            assert self.fingerprint is not None and self.store is not None
            if self._calibrate_width:
                fp, cal = calibrate_robust(
                    x_benign, x_heldout, target_rate=self.target_rate, seed=seed,
                    device=self.fingerprint.device, **self._robust_params,
                )  # fmt: skip
                self.fingerprint = fp
            else:  # a fixed width: only measure its false-match rates
                cal = measure_robust(self.fingerprint, x_benign, x_heldout, self.target_rate, seed)
        else:
            encoder = self._make_encoder(model)
            if isinstance(encoder, PCAEncoder):
                encoder.fit(x_benign)
            radius = self._radius  # a fixed radius is only measured
            if radius is None and self._radius_scale != 1.0:
                chosen = calibrate_radius(
                    encoder, x_benign, target_rate=self.target_rate, seed=seed
                )
                radius = chosen.value * self._radius_scale
            cal = calibrate_radius(
                encoder,
                x_benign,
                x_heldout,
                target_rate=self.target_rate,
                seed=seed,
                radius=radius,
            )
            self.memory = NeighbourMemory(encoder, radius=cal.value, index=self._index)
        self.calibration = cal
        return cal

    # -- the gate ---------------------------------------------------------------
    def near_repeats(self, ctx: Context) -> NDArray[np.bool_]:
        """Record the batch; True where a query approximately repeats an earlier one."""
        if self.kind == "neighbours":
            return self._memory(ctx.model).observe(ctx.x, ctx.times)
        assert self.fingerprint is not None and self.store is not None
        if self.fingerprint.device is None and _on_gpu(ctx.model):
            self.fingerprint.device = str(getattr(ctx.model, "device", "cpu"))
        keys = self.fingerprint.fingerprint(ctx.x)
        n, b = keys.shape
        # row-major order: every band of query i is observed before those of query i + 1
        prior = observe_from(
            self.store, keys.reshape(-1), np.repeat(ctx.clients, b), np.repeat(ctx.times, b)
        )
        return self.fingerprint.matched(prior.reshape(n, b) > 0)

    def __call__(self, ctx: Context) -> None:
        repeat = self.near_repeats(ctx)
        if not repeat.any():
            return
        # an earlier gate (a rate limit, exact memorization) keeps its decision
        repeat &= ctx.answers.undecided_mask
        if self.on_repeat == "abstain":
            ctx.answers.labels[repeat] = ABSTAIN
            ctx.answers.reasons[repeat] = Reason.NEAR_REPEAT
        else:
            ctx.answers.labels[repeat] = ctx.rng.integers(0, ctx.n_classes, int(repeat.sum()))
            ctx.answers.reasons[repeat] = Reason.NEAR_REPEAT_RANDOM

    def reset(self) -> None:
        """Forget every remembered query (calibration is kept)."""
        if self.store is not None:
            self.store.clear()
        if self.memory is not None:
            self.memory.clear()

    def describe(self) -> str:
        """``near-repeat(on_repeat=..., fingerprint=...)`` plus every setting that differs
        from its default, so two compositions that behave differently read differently."""
        parts = [f"on_repeat={self.on_repeat}", f"fingerprint={self.kind}"]
        parts += [f"{k}={_text(v)}" for k, v in self._settings.items()]
        return f"near-repeat({', '.join(parts)})"


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


_G = TypeVar("_G", bound=np.generic)


def calibrate_defense(
    defense: Any,
    x_benign: NDArray[np.generic] | None,
    x_heldout: NDArray[np.generic] | None = None,
    *,
    seed: int = 0,
    unseen: tuple[NDArray[np.generic], NDArray[np.generic] | None] | None = None,
) -> list[Calibration]:
    """Calibrate every mechanism of ``defense`` that can be (``calibrate``) on benign
    queries; returns their calibrations (empty when there is nothing to calibrate).

    ``x_benign`` are benign inputs such as the model's training inputs, ``x_heldout``
    benign inputs the reported alarm rate is measured on. A mechanism whose
    ``calibrate_on`` is ``"unseen"`` (its scores are lower on the model's own training
    inputs than on new ones, as the centroid detector's) is calibrated on
    ``unseen = (x_calibration, x_heldout)`` instead, benign inputs the model did not
    train on, where given, with ``reference=x_benign`` (what it fits beside the
    threshold, such as centroids); without them it falls back to ``x_benign``.

    >>> calibrate_defense(object(), None)
    []
    """
    out: list[Calibration] = []
    for mechanism in getattr(defense, "mechanisms", []):
        calibrate = getattr(mechanism, "calibrate", None)
        if not callable(calibrate):
            continue
        cal = None
        if getattr(mechanism, "calibrate_on", "training") == "unseen" and unseen is not None:
            # the benign inputs fit its reference points, the unseen ones its threshold
            cal = calibrate(*unseen, model=defense.model, seed=seed, reference=x_benign)
        elif x_benign is not None:
            cal = calibrate(x_benign, x_heldout, model=defense.model, seed=seed)
        if cal is not None:  # None: nothing to choose in this setting (exact correction)
            out.append(cal)
    return out


def split_unseen(
    x: NDArray[_G], seed: int | list[int], size: int | None = None
) -> tuple[NDArray[_G], NDArray[_G]]:
    """A seeded half of ``x`` to calibrate on (at most ``size`` rows) and the other half
    to check the calibration on: the ``unseen`` argument of :func:`calibrate_defense`.

    >>> cal, held = split_unseen(np.arange(10)[:, None], seed=0)
    >>> len(cal), len(held), sorted(np.concatenate([cal, held]).ravel().tolist()) == list(range(10))
    (5, 5, True)
    """
    order = np.random.default_rng(seed).permutation(len(x))
    half = len(x) // 2
    cal, held = np.sort(order[:half]), np.sort(order[half:])
    if size is not None:
        cal = cal[:size]
    return x[cal], x[held]


def _open(store: Store | str | None) -> Store:
    if store is None:
        return InProcessStore()
    if isinstance(store, str):
        from movingtarget.memory.stores.urls import open_store

        return open_store(store, namespace="near_repeat")
    return store


def _is_torch(model: Any) -> bool:
    module = getattr(model, "module", None)
    return module is not None and type(module).__module__.startswith("torch")


def _on_gpu(model: Any) -> bool:
    return _is_torch(model) and str(getattr(model, "device", "cpu")).startswith("cuda")


def _seed_of(secret: bytes | str | None) -> int:
    import hashlib

    from movingtarget.memory.fingerprints.exact import secret_from_env

    digest = hashlib.blake2b(secret_from_env(secret), digest_size=8, person=b"mt-encoder")
    return int.from_bytes(digest.digest(), "little")
