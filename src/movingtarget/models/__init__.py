"""The models box: ``predict_proba(x) -> (n, k)`` behind one protocol, by name.

Every model is a factory ``factory(split, *, seed=0, **params) -> Model`` registered
in :data:`MODELS`; :func:`build_model` trains it, or loads it from the cache.
Reference models: ``logistic``, ``mlp`` (scikit-learn), ``cnn`` (PyTorch); the
boundary-smoothing baselines ``torch-mlp``, ``adv-mlp``, ``adv-cnn`` (adversarial
training, ART) and ``noise-mlp`` (Gaussian-noise training), see
:mod:`movingtarget.models.smoothing`; the ``synthetic`` classifier with a chosen ``r``;
``pool``, K members of any of these (:mod:`movingtarget.models.pool`).
torch is optional: this package imports it only when a torch model is built.

Examples
--------
>>> import tempfile
>>> from movingtarget.datasets import load_digits
>>> split = load_digits().split(seed=0)
>>> cache = tempfile.mkdtemp()
>>> model = build_model("logistic", split, cache_dir=cache)  # trains, then caches
>>> again = build_model("logistic", split, cache_dir=cache)  # loads from the cache
>>> bool((model.predict_proba(split.x_test) == again.predict_proba(split.x_test)).all())
True
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import sklearn as _sklearn  # not "sklearn": the submodule of that name shadows it

from movingtarget.datasets.base import Split
from movingtarget.errors import ConfigError
from movingtarget.models.base import Model, OnlineModel, is_online
from movingtarget.models.checks import check_model, check_online_model
from movingtarget.models.files import file_model, load_model_file
from movingtarget.models.pool import ModelPool, pool
from movingtarget.models.reference import cnn, logistic, mlp
from movingtarget.models.sklearn import SklearnModel
from movingtarget.models.smoothing import adv_cnn, adv_mlp, noise_mlp, torch_mlp
from movingtarget.models.synthetic import SyntheticClassifier, synthetic
from movingtarget.models.torch import TorchModel
from movingtarget.registry import Registry, is_import_path

__all__ = [
    "MODELS",
    "Model",
    "ModelPool",
    "OnlineModel",
    "SklearnModel",
    "SyntheticClassifier",
    "TorchModel",
    "build_model",
    "cache_path",
    "check_model",
    "check_online_model",
    "default_cache_dir",
    "is_online",
    "load_model_file",
    "split_digest",
]

#: Model name -> factory ``(split, *, seed=0, **params) -> Model``.
MODELS: Registry[Model] = Registry("model", "movingtarget.models")

MODELS.register("logistic")(logistic)
MODELS.register("mlp")(mlp)
MODELS.register("cnn")(cnn)
MODELS.register("synthetic")(synthetic)
MODELS.register("torch-mlp")(torch_mlp)
MODELS.register("adv-mlp")(adv_mlp)
MODELS.register("adv-cnn")(adv_cnn)
MODELS.register("noise-mlp")(noise_mlp)
MODELS.register("pool")(pool)
MODELS.register("file")(file_model)

#: Bump when the cache format changes: older entries are then ignored. 2: a pool keeps
#: the recipe of its members (a continual refresh trains new ones with it).
CACHE_FORMAT = 2


def default_cache_dir() -> Path:
    """``$MOVINGTARGET_CACHE`` if set, else ``~/.cache/movingtarget``."""
    env = os.environ.get("MOVINGTARGET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "movingtarget"


def split_digest(split: Split) -> str:
    """A hex digest of the split's arrays (bytes, dtypes and shapes) and class count."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"n_classes={split.n_classes};".encode())
    for arr in (split.x_train, split.y_train, split.x_test, split.y_test):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes() if not a.flags.c_contiguous else a.data.cast("B"))
    return h.hexdigest()


def _bind(
    name: str, split: Split, seed: int, device: str, params: dict[str, Any]
) -> dict[str, Any]:
    """The factory's keyword arguments with defaults filled in; ConfigError if invalid."""
    factory = MODELS.get(name)
    sig = inspect.signature(factory)
    kwargs = dict(params)
    takes_device = "device" in sig.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
    )
    if takes_device:
        kwargs["device"] = device
    try:
        bound = sig.bind(split, seed=seed, **kwargs)
    except TypeError as exc:
        accepted = [p for p in sig.parameters if p not in ("split", "device")]
        raise ConfigError(f"model {name!r}: {exc} (parameters: {', '.join(accepted)})") from None
    bound.apply_defaults()
    args = dict(bound.arguments)
    args.pop(next(iter(sig.parameters)))  # the split
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            args.update(args.pop(p.name, {}))
    return args


def cache_path(
    name: str,
    split: Split,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    **params: Any,
) -> Path:
    """Where :func:`build_model` keeps (or would keep) this model.

    The file name holds the dataset and model names and a digest of: the split's
    bytes, the model name, its parameters (defaults filled in), the seed, the cache
    format and the scikit-learn version. The device is not part of the key.
    """
    args = _bind(name, split, seed, "auto", params)
    args.pop("device", None)
    key_src = json.dumps(
        {
            "format": CACHE_FORMAT,
            "sklearn": _sklearn.__version__,
            "dataset": split.name,
            "split": split_digest(split),
            "model": name,
            "params": args,
        },
        sort_keys=True,
        default=repr,
    )
    key = hashlib.blake2b(key_src.encode(), digest_size=12).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{split.name}-{name}")
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / f"{stem}-{key}.pkl"


def _load(path: Path, split: Split) -> Model | None:
    """The cached model at ``path``, or None (with a warning) if it is unusable."""
    try:
        with path.open("rb") as f:
            entry = pickle.load(f)
        model = entry["model"] if isinstance(entry, dict) else None
        if not isinstance(model, Model) or model.n_classes != split.n_classes:
            raise ValueError("not a model for this split")
    except Exception as exc:  # any unreadable entry is retrained, never a crash
        warnings.warn(
            f"{path}: unusable model cache entry ({type(exc).__name__}: {exc}); retraining",
            stacklevel=3,
        )
        return None
    return model


def _save(path: Path, model: Model) -> None:
    """Write atomically (temp file + rename); a failure only warns."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump({"format": CACHE_FORMAT, "model": model}, f, protocol=5)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        warnings.warn(f"{path}: cannot write the model cache ({exc}); not cached", stacklevel=3)


def build_model(
    name: str,
    split: Split,
    *,
    seed: int = 0,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    **params: Any,
) -> Model:
    """Train the model registered as ``name`` on ``split``, or load it from the cache.

    ``params`` go to the factory (an unknown one is a :class:`ConfigError` listing the
    accepted ones); ``device`` goes to factories that take one (torch models) and a
    cached torch model is moved to it. The cache (see :func:`cache_path`) lives in
    ``cache_dir``, default :func:`default_cache_dir`; entries are pickles, so only
    point it at a directory you own. A corrupt entry is retrained and overwritten.
    Models whose factory sets ``cacheable = False`` (``synthetic``) are always rebuilt.
    """
    factory = MODELS.get(name)
    args = _bind(name, split, seed, device, params)
    # a user's module:attribute factory is never cached: its code may change, its name not
    if is_import_path(name) or not getattr(factory, "cacheable", True):
        return _checked(name, factory(split, **args), split)
    path = cache_path(name, split, seed=seed, cache_dir=cache_dir, **params)
    if path.exists():
        model = _load(path, split)
        if model is not None:
            if "device" in args and isinstance(model, TorchModel):
                model.to(device)
            return model
    model = _checked(name, factory(split, **args), split)
    _save(path, model)
    return model


def _checked(name: str, model: object, split: Split) -> Model:
    """``model`` if it is a model for ``split``; a :class:`ConfigError` naming the factory
    otherwise (a user's factory that returns the wrong thing)."""
    if not isinstance(model, Model):
        raise ConfigError(
            f"model {name!r} returned {type(model).__name__}, not a model (an object with "
            "n_classes and predict_proba)"
        )
    if int(model.n_classes) != split.n_classes:
        raise ConfigError(
            f"model {name!r} answers {model.n_classes} classes but dataset {split.name!r} "
            f"has {split.n_classes}"
        )
    return model
