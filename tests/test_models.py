"""The models box: adapters, reference models, the synthetic classifier and the cache."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from movingtarget.datasets import Split, load_dataset
from movingtarget.errors import ConfigError, InputError
from movingtarget.models import (
    MODELS,
    Model,
    OnlineModel,
    SklearnModel,
    SyntheticClassifier,
    TorchModel,
    build_model,
    cache_path,
    check_model,
    check_online_model,
    default_cache_dir,
    is_online,
)

# The tests fit small LogisticRegressions with low iteration caps on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Small settings so every registered model trains in about a second.
FAST: dict[str, dict[str, Any]] = {
    "logistic": {},
    "mlp": {"max_iter": 20},
    "cnn": {"epochs": 2, "max_train": 1000, "lr": 3e-3, "batch_size": 32},
    "synthetic": {},
    "torch-mlp": {"epochs": 5},
    "adv-mlp": {"epochs": 2, "max_iter": 2},
    "adv-cnn": {"epochs": 2, "max_train": 1000, "lr": 3e-3, "batch_size": 32, "max_iter": 2},
    "noise-mlp": {"epochs": 5},
    "pool": {"members": 3},
    "file": {},  # an ONNX file of the logistic model, written by the test
}


@pytest.fixture(scope="module")
def digits() -> Split:
    return load_dataset("digits").split(test_size=0.3, seed=0)


@pytest.fixture(scope="module")
def cancer() -> Split:
    return load_dataset("breast-cancer").split(test_size=0.3, seed=0)


@pytest.fixture(scope="module")
def fashion() -> Split:
    return load_dataset("fashion-mnist", part="test", limit=3000).split(test_size=0.3, seed=0)


@pytest.fixture(scope="module")
def spambase() -> Split:
    return load_dataset("spambase").split(test_size=0.3, seed=0)


def split_for(name: str, digits: Split, fashion: Split) -> Split:
    return fashion if name in ("cnn", "adv-cnn") else digits


# --------------------------------------------------------------------------- registry


def test_every_model_is_listed_for_these_tests() -> None:
    assert set(MODELS.names()) == set(FAST), "add new models to FAST so check_model runs on them"


@pytest.mark.parametrize("name", sorted(FAST))
def test_check_model_on_every_registered_model(
    name: str, digits: Split, fashion: Split, tmp_path: Path
) -> None:
    split = split_for(name, digits, fashion)
    params = dict(FAST[name])
    if name == "file":
        from movingtarget.models.export import export_model

        logistic = build_model("logistic", split, cache_dir=tmp_path)
        params["path"] = str(export_model(logistic, tmp_path / "logistic.onnx", split.x_test))
    model = build_model(name, split, cache_dir=tmp_path, **params)
    assert isinstance(model, Model) and model.n_classes == split.n_classes
    p = check_model(model, split.x_test[:200])
    accuracy = (p.argmax(axis=1) == split.y_test[:200]).mean()
    assert accuracy > 0.6, f"{name} is barely better than chance: {accuracy}"
    if is_online(model):  # a pool of logistic members has partial_fit, but cannot learn
        check_online_model(model, split.x_train[:32], split.y_train[:32])


def test_unknown_model_and_parameter(digits: Split, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'logistic'"):
        build_model("logistc", digits, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"model 'logistic': .*'depth'.*parameters: seed, C"):
        build_model("logistic", digits, cache_dir=tmp_path, depth=3)


# --------------------------------------------------------------------------- checks


class _BatchDependent:
    """Answers depend on the batch: the mean of the batch leaks into each row."""

    n_classes = 2

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = x.sum(axis=1) - x.sum() / 2
        p1 = 1 / (1 + np.exp(-z))
        return np.stack([1 - p1, p1], axis=1)


class _Unnormalised:
    n_classes = 2

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), 2), 0.6)


def test_check_model_catches_broken_models() -> None:
    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    with pytest.raises(AssertionError, match="answers differ from the batch"):
        check_model(_BatchDependent(), x)
    with pytest.raises(AssertionError, match="rows sum to"):
        check_model(_Unnormalised(), x)


# --------------------------------------------------------------------------- sklearn adapter


@pytest.mark.parametrize("data", ["digits", "cancer"])
@pytest.mark.parametrize("scaled", [True, False])
def test_linear_fast_path_matches_sklearn(data: str, scaled: bool, request: Any) -> None:
    split: Split = request.getfixturevalue(data)
    lr = LogisticRegression(max_iter=300)
    est = make_pipeline(StandardScaler(), lr) if scaled else lr
    est.fit(split.x_train.astype(np.float64), split.y_train)
    model = SklearnModel(est, split.n_classes)
    assert model.fast_path
    got = model.predict_proba(split.x_test)
    want = est.predict_proba(split.x_test.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    for i in range(5):  # batches of one, as the arena sends them
        np.testing.assert_allclose(
            model.predict_proba(split.x_test[i : i + 1]), want[i : i + 1], atol=1e-6
        )


def test_one_vs_rest_is_not_fast_pathed(digits: Split) -> None:
    # One-vs-rest probabilities are normalised sigmoids, not a softmax: no fast path.
    est = OneVsRestClassifier(LogisticRegression(max_iter=200))
    est.fit(digits.x_train.astype(np.float64), digits.y_train)
    model = SklearnModel(est, digits.n_classes)
    assert not model.fast_path
    np.testing.assert_allclose(
        model.predict_proba(digits.x_test), est.predict_proba(digits.x_test.astype(np.float64))
    )


def test_classes_map_to_their_columns() -> None:
    x = np.array([[0.0], [1.0], [4.0], [5.0]], np.float32)
    est = LogisticRegression().fit(x, [1, 1, 3, 3])
    model = SklearnModel(est, n_classes=4)
    p = check_model(model, x)
    assert (p[:, [0, 2]] == 0).all()
    assert p.argmax(axis=1).tolist() == [1, 1, 3, 3]


def test_sklearn_adapter_rejects_bad_setups(digits: Split) -> None:
    with pytest.raises(ConfigError, match="not fitted"):
        SklearnModel(LogisticRegression(), 10)
    est = LogisticRegression(max_iter=50).fit(digits.x_train, digits.y_train)
    with pytest.raises(ConfigError, match=r"classes_ must be distinct integers in \[0, 5\)"):
        SklearnModel(est, 5)
    model = SklearnModel(est, 10)
    with pytest.raises(InputError, match="inputs have 63 features per row, the model expects 64"):
        model.predict_proba(np.zeros((2, 63), np.float32))


def test_partial_fit_only_when_supported(digits: Split) -> None:
    est = LogisticRegression(max_iter=50).fit(digits.x_train, digits.y_train)
    fixed = SklearnModel(est, 10)
    assert not isinstance(fixed, OnlineModel) and not hasattr(fixed, "partial_fit")

    sgd = SGDClassifier(loss="log_loss", random_state=0).fit(digits.x_train, digits.y_train)
    online = SklearnModel(sgd, 10)
    assert isinstance(online, OnlineModel)
    before = online.predict_proba(digits.x_test[:50]).copy()
    online.partial_fit(digits.x_test[:50], digits.y_test[:50])
    assert not np.array_equal(before, online.predict_proba(digits.x_test[:50]))
    with pytest.raises(InputError, match="labels must be among the classes"):
        online.partial_fit(digits.x_test[:2], np.array([0, 11]))


def test_mlp_pipeline_partial_fit_goes_through_the_scaler(digits: Split, tmp_path: Path) -> None:
    model = build_model("mlp", digits, cache_dir=tmp_path, max_iter=5)
    assert isinstance(model, SklearnModel) and isinstance(model, OnlineModel)
    x, y = digits.x_test[:100], digits.y_test[:100]
    wrong = (y + 1) % 10
    before = (model.predict_proba(x).argmax(axis=1) == wrong).mean()
    for _ in range(30):
        model.partial_fit(x, wrong)
    after = (model.predict_proba(x).argmax(axis=1) == wrong).mean()
    assert after > before + 0.5


# --------------------------------------------------------------------------- torch


def test_torch_adapter_basics() -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 3))
    model = TorchModel(net, 3, input_shape=(2, 3), device="auto", batch_size=4)
    assert model.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert model.module is net and model.input_shape == (2, 3)
    x = np.random.default_rng(0).normal(size=(10, 2, 3)).astype(np.float32)
    p = check_model(model, x)  # 10 rows in batches of 4
    with torch.no_grad():
        want = torch.softmax(net(torch.from_numpy(x).to(model.device)).double(), 1).cpu().numpy()
    np.testing.assert_allclose(p, want, atol=1e-6)
    assert not net.training
    y = p.argmin(axis=1)
    loss0 = -np.log(p[np.arange(10), y]).mean()
    model.partial_fit(x, y)
    p1 = model.predict_proba(x)
    assert -np.log(p1[np.arange(10), y]).mean() < loss0
    with pytest.raises(InputError, match=r"inputs must have shape \(n, 2, 3\)"):
        model.predict_proba(np.zeros((1, 6), np.float32))
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(again.predict_proba(x), p1, atol=1e-6)


def test_cnn_needs_images(digits: Split, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'cnn' needs image inputs .* shape \(64,\)"):
        build_model("cnn", digits, cache_dir=tmp_path)


def test_cnn_is_seeded(fashion: Split, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    a = build_model("cnn", fashion, seed=3, cache_dir=tmp_path / "a", epochs=1, max_train=300)
    b = build_model("cnn", fashion, seed=3, cache_dir=tmp_path / "b", epochs=1, max_train=300)
    c = build_model("cnn", fashion, seed=4, cache_dir=tmp_path / "c", epochs=1, max_train=300)
    assert isinstance(a, TorchModel) and a.input_shape == (1, 28, 28)
    x = fashion.x_test[:50]
    np.testing.assert_allclose(a.predict_proba(x), b.predict_proba(x), atol=1e-6)
    assert not np.allclose(a.predict_proba(x), c.predict_proba(x), atol=1e-3)


def test_models_import_without_torch(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys

        class NoTorch:  # makes "import torch" fail, as if torch were not installed
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        import movingtarget.models as m
        from movingtarget.datasets import Dataset
        from movingtarget.errors import ConfigError
        split = Dataset("imgs", np.zeros((20, 1, 8, 8), np.float32), np.arange(20) % 2).split()
        assert m.build_model("logistic", split, cache_dir=sys.argv[1]).n_classes == 2
        assert "torch" not in sys.modules
        for make in (lambda: m.build_model("cnn", split, cache_dir=sys.argv[1]),
                     lambda: m.TorchModel(object(), 2)):
            try:
                make()
            except ConfigError as exc:
                print(exc)
            else:
                raise SystemExit("no ConfigError")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("pip install 'movingtarget[torch]'") == 2


# --------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("r", [0.0, 0.02, 0.1, 0.5, 1.0])
def test_synthetic_exact_error_rate(digits: Split, r: float) -> None:
    model = SyntheticClassifier(digits, r=r, seed=7)
    n_test, n_train = len(digits.y_test), len(digits.y_train)
    assert model.n_errors_test == round(r * n_test)
    assert int(model.errs_train.sum()) == round(r * n_train)
    assert model.errs.shape == (n_train + n_test,) and model.errs.dtype == bool
    # Measured through the model itself, not only its bookkeeping.
    assert (model.predict(digits.x_test) != digits.y_test).sum() == round(r * n_test)
    assert (model.predict(digits.x_train) != digits.y_train).sum() == round(r * n_train)
    assert model.natural_error() == model.error_rate(digits.x_test, digits.y_test)
    assert model.natural_error("train") == round(r * n_train) / n_train
    np.testing.assert_array_equal(model.predict(digits.x_test) != digits.y_test, model.errs_test)


def test_synthetic_on_real_fashion_mnist(fashion: Split) -> None:
    model = SyntheticClassifier(fashion, r=0.02, seed=0)
    assert model.n_errors_test == round(0.02 * len(fashion.y_test)) == 18
    assert model.error_rate(fashion.x_test, fashion.y_test) == 18 / len(fashion.y_test)


def test_synthetic_exact_with_duplicated_inputs(spambase: Split) -> None:
    # Spambase repeats inputs, a few with different labels: the count is still exact.
    model = SyntheticClassifier(spambase, r=0.05, seed=2)
    n_test = len(spambase.y_test)
    assert (model.predict(spambase.x_test) != spambase.y_test).sum() == round(0.05 * n_test)
    with pytest.warns(UserWarning, match="share an input with a differently labeled point"):
        SyntheticClassifier(spambase, r=0.0, seed=2)


def test_synthetic_noisy_copies_keep_the_decision(digits: Split) -> None:
    model = SyntheticClassifier(digits, r=0.1, seed=1)
    rng = np.random.default_rng(5)
    noisy = digits.x_test + rng.normal(0, 0.02, size=digits.x_test.shape).astype(np.float32)
    np.testing.assert_array_equal(model.predict(noisy), model.predict(digits.x_test))
    np.testing.assert_allclose(model.predict_proba(noisy), model.predict_proba(digits.x_test))
    mistakes = digits.x_test[model.errs_test]
    assert (model.predict(mistakes + 0.01) != digits.y_test[model.errs_test]).all()


def test_synthetic_probabilities_and_wrong_classes(digits: Split) -> None:
    model = SyntheticClassifier(digits, r=0.2, confidence=(0.6, 0.9), seed=3)
    p = check_model(model, digits.x_test)
    top = p.max(axis=1)
    assert (top > 0.6).all() and (top <= 0.9).all()
    rest = (1 - top) / 9
    assert np.allclose(np.sort(p, axis=1)[:, :-1], rest[:, None])
    wrong = model.predict(digits.x_test)[model.errs_test]
    assert (wrong != digits.y_test[model.errs_test]).all()
    assert len(np.unique(wrong)) > 5  # seeded, spread over the wrong classes


def test_synthetic_is_deterministic_and_nested(digits: Split) -> None:
    a = SyntheticClassifier(digits, r=0.05, seed=11)
    b = SyntheticClassifier(digits, r=0.05, seed=11)
    c = SyntheticClassifier(digits, r=0.05, seed=12)
    np.testing.assert_array_equal(a.predict_proba(digits.x_test), b.predict_proba(digits.x_test))
    assert not np.array_equal(a.errs, c.errs)
    bigger = SyntheticClassifier(digits, r=0.2, seed=11)
    assert (bigger.errs >= a.errs).all()
    np.testing.assert_array_equal(bigger.labels[a.errs], a.labels[a.errs])


def test_synthetic_bad_params(digits: Split) -> None:
    with pytest.raises(ConfigError, match=r"r must be a number in \[0, 1\]"):
        SyntheticClassifier(digits, r=1.5)
    with pytest.raises(ConfigError, match="confidence must satisfy 1/k <= low <= high <= 1"):
        SyntheticClassifier(digits, confidence=(0.05, 0.9))
    with pytest.raises(ConfigError, match="confidence must be a pair"):
        SyntheticClassifier(digits, confidence=0.9)  # type: ignore[arg-type]
    model = SyntheticClassifier(digits)
    with pytest.raises(InputError, match=r"inputs must have shape \(n, 64\)"):
        model.predict_proba(np.zeros((1, 8, 8), np.float32))
    with pytest.raises(InputError, match="NaN or infinite"):
        model.predict_proba(np.full((1, 64), np.nan, np.float32))


# --------------------------------------------------------------------------- cache


def test_cache_second_build_loads(digits: Split, tmp_path: Path) -> None:
    path = cache_path("logistic", digits, seed=1, cache_dir=tmp_path)
    assert not path.exists()
    first = build_model("logistic", digits, seed=1, cache_dir=tmp_path)
    assert path.exists() and path.parent == tmp_path and path.name.startswith("digits-logistic-")
    # Mark the cached model: only a load (not a retrain) can return the mark.
    entry = pickle.loads(path.read_bytes())
    entry["model"].marker = "from-cache"
    path.write_bytes(pickle.dumps(entry))
    second = build_model("logistic", digits, seed=1, cache_dir=tmp_path)
    assert getattr(second, "marker", None) == "from-cache"
    np.testing.assert_array_equal(
        first.predict_proba(digits.x_test), second.predict_proba(digits.x_test)
    )


def test_cache_key_covers_params_seed_and_data(digits: Split, cancer: Split) -> None:
    base = cache_path("logistic", digits, seed=0, cache_dir="/c")
    assert cache_path("logistic", digits, seed=0, cache_dir="/c", C=0.1) == base  # the default
    assert cache_path("logistic", digits, seed=0, cache_dir="/c", C=1.0) != base
    assert cache_path("logistic", digits, seed=1, cache_dir="/c") != base
    assert cache_path("mlp", digits, seed=0, cache_dir="/c") != base
    other = Split(
        digits.name,
        digits.x_train.copy(),
        (digits.y_train + 1) % 10,
        digits.x_test,
        digits.y_test,
        digits.n_classes,
    )
    assert cache_path("logistic", other, seed=0, cache_dir="/c") != base
    assert cache_path("logistic", cancer, seed=0, cache_dir="/c").name.startswith(
        "breast-cancer-logistic-"
    )


@pytest.mark.parametrize("garbage", [b"", b"not a pickle", pickle.dumps({"model": 42})])
def test_corrupt_cache_entry_is_retrained(digits: Split, tmp_path: Path, garbage: bytes) -> None:
    path = cache_path("logistic", digits, cache_dir=tmp_path)
    path.write_bytes(garbage)
    with pytest.warns(UserWarning, match="unusable model cache entry; retraining|retraining"):
        model = build_model("logistic", digits, cache_dir=tmp_path)
    check_model(model, digits.x_test[:10])
    entry = pickle.loads(path.read_bytes())  # rewritten with the retrained model
    np.testing.assert_array_equal(
        entry["model"].predict_proba(digits.x_test), model.predict_proba(digits.x_test)
    )


def test_cache_dir_default_and_env(
    digits: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOVINGTARGET_CACHE", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "movingtarget"
    monkeypatch.setenv("MOVINGTARGET_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    build_model("logistic", digits)
    assert len(list((tmp_path / "env").glob("digits-logistic-*.pkl"))) == 1


def test_synthetic_is_not_cached(digits: Split, tmp_path: Path) -> None:
    build_model("synthetic", digits, cache_dir=tmp_path, r=0.1)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_cache_only_warns(digits: Split, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="cannot write the model cache"):
        model = build_model("logistic", digits, cache_dir=blocker / "sub")
    assert model.n_classes == 10


def test_build_model_does_not_leave_temp_files(digits: Split, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model("logistic", digits, cache_dir=tmp_path)
    assert [p.suffix for p in tmp_path.iterdir()] == [".pkl"]
    assert os.access(next(tmp_path.iterdir()), os.R_OK)
