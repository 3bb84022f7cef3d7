"""scikit-learn estimators in files: skops (``.skops``), and pickles only when trusted.

A skops file is loaded only when every type it names is trusted: skops' own defaults
(scikit-learn, NumPy and SciPy types it audits) plus the ``trusted_types`` the user lists.
A pickle (``.pkl``, ``.pickle``, ``.joblib``) runs any code it names when loaded, so it
loads only with ``trust = true``, and a warning says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from movingtarget._optional import require
from movingtarget.errors import ConfigError, DataError, NoticeWarning
from movingtarget.models.base import Model
from movingtarget.models.files.common import FileInfo, read_bytes
from movingtarget.models.sklearn import SklearnModel

__all__ = ["PICKLE_SUFFIXES", "load_pickle", "load_skops"]

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


class UntrustedPickle(NoticeWarning):
    """A pickle was loaded because the user said it is trusted."""


def _as_model(obj: Any, path: Path, n_classes: int | None) -> Model:
    """The model in a loaded object: a model, a model-cache entry, or a fitted estimator."""
    if isinstance(obj, dict) and "model" in obj:
        obj = obj["model"]
    if isinstance(obj, Model):
        return obj
    if hasattr(obj, "predict_proba") and hasattr(obj, "classes_"):
        k = n_classes if n_classes is not None else len(obj.classes_)
        try:
            return SklearnModel(obj, int(k))
        except ConfigError as exc:
            raise DataError(f"{path}: {exc}") from None
    raise DataError(
        f"{path}: holds {type(obj).__name__}, not a model nor a fitted scikit-learn "
        "classifier with predict_proba"
    )


def _attach(model: Model, path: Path, fmt: str, blob: bytes) -> Model:
    shape = getattr(model, "input_shape", None)
    if not shape:
        n = getattr(model, "n_features", None)
        shape = (int(n),) if n else ()
    info = FileInfo(
        str(path), fmt, hashlib.sha256(blob).hexdigest(), "input", tuple(shape), "FP32", "scores"
    )
    # a model class with slots keeps no info: serve then reads the digest from the file
    with contextlib.suppress(AttributeError):
        model.info = info  # type: ignore[attr-defined]
    return model


def load_skops(
    path: Path, *, trusted_types: Sequence[str] = (), n_classes: int | None = None
) -> Model:
    """The estimator in a skops file, loaded only if every type it holds is trusted.

    Examples
    --------
    >>> import tempfile, os, numpy as np, skops.io as sio
    >>> from sklearn.linear_model import LogisticRegression
    >>> est = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    >>> path = Path(tempfile.mkdtemp()) / "lr.skops"
    >>> sio.dump(est, path)
    >>> load_skops(path).predict_proba(np.zeros((1, 1), np.float32)).shape
    (1, 2)
    """
    sio = require("skops.io", "skops model files")
    blob = read_bytes(path)
    try:
        untrusted = list(sio.get_untrusted_types(data=blob))
    except Exception as exc:  # not a skops archive
        raise DataError(
            f"{path}: not a skops file ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
        ) from None
    trusted = [str(t) for t in trusted_types]
    refused = [t for t in untrusted if t not in trusted]
    if refused:
        raise DataError(
            f"{path}: holds types that are not trusted: {', '.join(refused)}; if you trust "
            f"them, list them: trusted_types = {refused!r} (--trusted-type for serve)"
        )
    try:
        obj = sio.loads(blob, trusted=untrusted or None)
    except Exception as exc:
        raise DataError(
            f"{path}: cannot load the skops file ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:160]})"
        ) from None
    return _attach(_as_model(obj, path, n_classes), path, "skops", blob)


def load_pickle(path: Path, *, trust: bool = False, n_classes: int | None = None) -> Model:
    """A pickled model or estimator (``.pkl``, ``.pickle``, ``.joblib``), only with ``trust``.

    >>> load_pickle(Path("model.pkl"))
    Traceback (most recent call last):
    ...
    movingtarget.errors.ConfigError: model.pkl: a pickle runs any code it holds when loaded: ...
    """
    if not trust:
        raise ConfigError(
            f"{path}: a pickle runs any code it holds when loaded: load it only from a "
            "source you trust, with trust = true (--trust for serve), or save the model "
            "with skops (.skops) or as ONNX (.onnx)"
        )
    blob = read_bytes(path)
    warnings.warn(
        f"{path}: loading a pickle (trust = true): it can run any code it holds",
        UntrustedPickle,
        stacklevel=3,
    )
    try:
        if path.suffix == ".joblib":
            joblib = require("joblib", "joblib model files")
            obj = joblib.load(io.BytesIO(blob))
        else:
            obj = pickle.loads(blob)
    except Exception as exc:  # any unreadable pickle is the user's file problem
        raise DataError(f"{path}: cannot load ({type(exc).__name__}: {exc})") from None
    return _attach(_as_model(obj, path, n_classes), path, path.suffix.lstrip("."), blob)
