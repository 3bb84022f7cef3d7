"""What the gateway serves: a model (by reference spec or saved file) and its metadata.

``--model`` takes either

* a reference spec ``DATASET:MODEL`` (``digits:logistic``, ``breast-cancer:mlp``):
  the dataset is split as experiments split it (``test_size`` 0.3, split seed 0,
  model seed 0, overridable) and the reference model is trained, or loaded from the
  model cache — so a gateway and a local experiment with the same spec serve the
  very same model; or
* a model file, read by :func:`~movingtarget.models.load_model_file`: ``.onnx``
  (onnxruntime), ``.pt`` (TorchScript), ``.pt2`` (``torch.export``, with ``--trust``),
  ``.skops`` (every type trusted, ``--trusted-type``), or a pickle (``.pkl``,
  ``.joblib``: a pickled :class:`~movingtarget.models.Model`, a model-cache entry or a
  fitted estimator) only with ``--trust``, since a pickle runs any code it holds. The
  file's input name, shape and datatype are what the KServe metadata reports, and its
  SHA-256 is the model's version prefix, in ``/healthz``, the audit log and metrics.

A model served from a dataset also declares its input domain (see
:func:`training_domain`): values outside it are refused or clipped before the defense
sees them (``--out-of-domain``); ``--input-range LO,HI`` states one range for every
feature instead (and gives a saved model, which has no training data, a domain).
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.datasets.base import Split
from movingtarget.errors import ConfigError, DataError
from movingtarget.gateway.server.inputs import InputDomain
from movingtarget.models.base import Model

#: Training inputs used to calibrate approximate memories (as experiments do).
CALIBRATION_SIZE = 2000

#: The default input domain widens each feature's training range, on each side, by this
#: share of its own span plus :data:`DOMAIN_MARGIN_OVERALL` of the whole training data's
#: span (so a feature never lit in training still takes a small change, such as the
#: arena's brightness transform, 5% of the span).
DOMAIN_MARGIN_FEATURE = 0.25
DOMAIN_MARGIN_OVERALL = 0.1


@dataclass(frozen=True)
class ServedModel:
    """A model ready to serve: its input shape, classes, name and version.

    Examples
    --------
    >>> served = load_served_model("digits:logistic")  # doctest: +SKIP
    >>> served.input_shape, served.n_classes           # doctest: +SKIP
    ((64,), 10)
    """

    model: Model
    name: str
    version: str
    input_shape: tuple[int, ...]
    n_classes: int
    source: str
    #: Training inputs that calibrate approximate memories (None for a saved file).
    calibration_x: NDArray[np.float32] | None = None
    #: The values the model expects (None: unknown, every finite value is taken).
    domain: InputDomain | None = None
    #: Test-split inputs the model did not train on, halved (calibrate on, check on),
    #: for mechanisms calibrated on unseen inputs (None for a saved file).
    unseen: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
    #: The dataset split the model was trained on (None for a saved file): the training
    #: data a refresh trains new members on, the test split a canary is drawn from.
    split: Split | None = None
    #: The model file's SHA-256 (None for a DATASET:MODEL spec).
    sha256: str | None = None
    #: The input tensor's name and KServe datatype, as the model file declares them.
    input_name: str = "input"
    datatype: str = "FP32"
    #: ``reference`` (a DATASET:MODEL spec) or the file format (``onnx``, ``skops``, ...).
    format: str = "reference"

    def domain_for(self, input_range: tuple[float, float] | None) -> InputDomain | None:
        """The domain served: ``input_range`` (one range for every feature) if stated,
        else the model's own."""
        if input_range is None:
            return self.domain
        lo, hi = input_range
        return InputDomain(np.array(lo, np.float32), np.array(hi, np.float32), "--input-range")


def training_domain(x_train: NDArray[Any], input_shape: tuple[int, ...]) -> InputDomain:
    """Each feature's range over the training inputs ``x_train``, widened by the margins
    above (on digits, no test input falls outside).

    >>> dom = training_domain(np.array([[0.0, 0.0], [1.0, 0.0]]), (2,))
    >>> np.allclose(dom.lo, [-0.35, -0.1]), np.allclose(dom.hi, [1.35, 0.1])
    (True, True)
    """
    x = np.asarray(x_train, dtype=np.float64).reshape(len(x_train), *input_shape)
    lo, hi = x.min(axis=0), x.max(axis=0)
    margin = DOMAIN_MARGIN_FEATURE * (hi - lo) + DOMAIN_MARGIN_OVERALL * (x.max() - x.min())
    return InputDomain(
        (lo - margin).astype(np.float32),
        (hi + margin).astype(np.float32),
        f"training data (each feature's range widened by {DOMAIN_MARGIN_FEATURE:g} of its "
        f"span and {DOMAIN_MARGIN_OVERALL:g} of the data's)",
    )


def _canonical_bytes(obj: object) -> bytes:
    """Pickle bytes that depend on the object's values, not on which equal objects
    happen to be shared in this process: without the memo, an interned string (or any
    object referenced twice) is written out each time instead of as a back-reference,
    so two processes holding the same model get the same bytes. Falls back to the
    ordinary pickle for self-referencing objects, which need the memo."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.fast = True  # no memo
    try:
        pickler.dump(obj)
    except (ValueError, RecursionError):
        return pickle.dumps(obj, protocol=5)
    return buffer.getvalue()


def _version(model: Model) -> str:
    # the model's own values decide its version: a retrained model gets a new one, the
    # same model in another process (another replica, an attacker's copy) the same one
    try:
        # one round trip first: a freshly trained model and the same model loaded from
        # a file pickle to different bytes (array layouts), a reloaded one does not
        blob = _canonical_bytes(pickle.loads(pickle.dumps(model, protocol=5)))
    except Exception:  # an unpicklable model still serves, under its type's name
        blob = type(model).__qualname__.encode()
    return hashlib.blake2b(blob, digest_size=6).hexdigest()


def _shape_of(model: Model) -> tuple[int, ...] | None:
    shape = getattr(model, "input_shape", None)
    if shape:
        return tuple(int(s) for s in shape)
    n = getattr(model, "n_features", None)
    return (int(n),) if n else None


def load_served_model(
    spec: str,
    *,
    test_size: float = 0.3,
    split_seed: int = 0,
    model_seed: int = 0,
    cache_dir: str | Path | None = None,
    input_shape: tuple[int, ...] | None = None,
    trust: bool = False,
    trusted_types: tuple[str, ...] = (),
    output: str = "auto",
) -> ServedModel:
    """The model that ``spec`` names (see the module docs)."""
    from movingtarget.models.files import FORMATS

    path = Path(spec)
    if path.suffix.lower() in FORMATS or (path.exists() and path.is_file()):
        return _load_file(path, input_shape, trust, trusted_types, output)
    if ":" not in spec:
        raise ConfigError(
            f"--model {spec!r}: write DATASET:MODEL (e.g. digits:logistic) or a model file "
            f"({', '.join(FORMATS)})"
        )
    from movingtarget.datasets import load_dataset
    from movingtarget.defenses import parse_mechanism
    from movingtarget.models import build_model

    dataset_name, model_text = (part.strip() for part in spec.split(":", 1))
    # MODEL or MODEL(param=value, ...), as a mechanism is written: digits:pool(member=mlp)
    try:
        model_name, params = parse_mechanism(model_text)
    except ConfigError:
        raise ConfigError(
            f"--model {spec!r}: write DATASET:MODEL or DATASET:MODEL(param=value, ...)"
        ) from None
    split = load_dataset(dataset_name).split(test_size=test_size, seed=split_seed)
    model = build_model(model_name, split, seed=model_seed, cache_dir=cache_dir, **params)
    shape = input_shape or split.input_shape
    name = f"{dataset_name}-{model_name}"
    if params:  # store namespaces take plain names: the parameters as a short digest
        name += (
            "-" + hashlib.blake2b(repr(sorted(params.items())).encode(), digest_size=4).hexdigest()
        )
    # the runner's calibration sample: the same thresholds as a local experiment
    cal = split.x_train
    if len(cal) > CALIBRATION_SIZE:
        pick = np.random.default_rng([split_seed, 0xCA1]).choice(
            len(cal), CALIBRATION_SIZE, replace=False
        )
        cal = cal[np.sort(pick)]
    domain = training_domain(split.x_train, tuple(shape))
    from movingtarget.defenses.near_repeat import split_unseen

    unseen = split_unseen(split.x_test, [split_seed, 0x5EE], CALIBRATION_SIZE)
    return ServedModel(
        model,
        name,
        _version(model),
        tuple(shape),
        split.n_classes,
        spec,
        cal,
        domain,
        unseen,
        split,
    )


def _load_file(
    path: Path,
    input_shape: tuple[int, ...] | None,
    trust: bool,
    trusted_types: tuple[str, ...],
    output: str,
) -> ServedModel:
    from movingtarget.models.files import FORMATS, file_info, file_sha256, load_model_file

    if path.suffix.lower() not in FORMATS:
        raise ConfigError(f"--model {path}: unknown model file type; use {', '.join(FORMATS)}")
    try:
        model = load_model_file(
            path,
            input_shape=input_shape,
            output=output,
            trust=trust,
            trusted_types=trusted_types,
        )
    except (ConfigError, DataError) as exc:  # named as the flag that gave the file
        raise type(exc)(f"--model {exc}") from None
    info = file_info(model)
    shape = input_shape or (info.input_shape if info and info.input_shape else None)
    shape = shape or _shape_of(model)
    if shape is None:
        raise ConfigError(
            f"--model {path}: the model does not say its input shape; pass --input-shape"
        )
    digest = info.sha256 if info is not None else file_sha256(path)
    name = path.stem.split("-")[0] or "model"
    return ServedModel(
        model,
        name,
        digest[:12],  # the file's bytes are its version: another file, another version
        tuple(shape),
        int(model.n_classes),
        str(path),
        sha256=digest,
        input_name=info.input_name if info is not None else "input",
        datatype=info.datatype if info is not None else "FP32",
        format=info.format if info is not None else "pickle",
    )
