"""The boundary-smoothing baselines (torch-mlp, adv-mlp, noise-mlp), trained for real on
digits with fixed seeds: accuracy, determinism, the cache, and what adversarial and
noisy training do (and do not do) to the natural error and to FGSM."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from movingtarget.datasets import Split, load_dataset
from movingtarget.errors import ConfigError
from movingtarget.models import TorchModel, build_model, cache_path

torch = pytest.importorskip("torch")
pytest.importorskip("art")

# adv-mlp is compared with torch-mlp trained for the same epochs from the same seed (same
# initial weights, same batch order): the adversarial rows are the only difference, so
# an adversarial training that silently used clean rows gives identical models.
ADV_EPOCHS = 10


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # Small products on two shared cores: more threads only fight over them.
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def digits() -> Split:
    return load_dataset("digits").split(test_size=0.3, seed=0)


@pytest.fixture(scope="module")
def standard(digits: Split) -> TorchModel:
    return _train("torch-mlp", digits, epochs=30)


@pytest.fixture(scope="module")
def standard_short(digits: Split) -> TorchModel:
    return _train("torch-mlp", digits, epochs=ADV_EPOCHS)


@pytest.fixture(scope="module")
def adversarial(digits: Split) -> TorchModel:
    return _train("adv-mlp", digits, epochs=ADV_EPOCHS)


@pytest.fixture(scope="module")
def noisy(digits: Split) -> TorchModel:
    return _train("noise-mlp", digits, epochs=30)


def _train(name: str, split: Split, **params: Any) -> TorchModel:
    from movingtarget.models import MODELS

    model = MODELS.get(name)(split, seed=0, device="cpu", **params)
    assert isinstance(model, TorchModel)
    return model


def error(model: TorchModel, split: Split) -> float:
    return float((model.predict_proba(split.x_test).argmax(axis=1) != split.y_test).mean())


def se(rate: float, n: int) -> float:
    """Standard error of a proportion measured on n independent trials."""
    return math.sqrt(rate * (1 - rate) / n)


def fgsm_success(model: TorchModel, split: Split, eps: float = 0.1) -> tuple[float, int]:
    """Share of the correctly classified test inputs whose prediction FGSM (L∞ ``eps``,
    ART, untargeted, true labels) flips; and how many inputs that share is of."""
    from art.attacks.evasion import FastGradientMethod
    from art.estimators.classification import PyTorchClassifier

    assert model.input_shape is not None
    classifier = PyTorchClassifier(
        model=model.module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=model.input_shape,
        nb_classes=model.n_classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    x = split.x_test.astype(np.float32)
    right = model.predict_proba(x).argmax(axis=1) == split.y_test
    adv = FastGradientMethod(classifier, eps=eps).generate(x=x[right], y=split.y_test[right])
    assert np.abs(adv - x[right]).max() <= eps + 1e-6
    flipped = model.predict_proba(adv.astype(np.float32)).argmax(axis=1) != split.y_test[right]
    return float(flipped.mean()), int(right.sum())


# --------------------------------------------------------------------------- torch-mlp


def test_torch_mlp_accuracy(digits: Split, standard: TorchModel) -> None:
    # Measured: 0.041, 0.039, 0.041 test error for seeds 0, 1, 2 (n = 539 test digits,
    # s.e. about 0.0085). The bound 0.07 is that plus about 3.5 standard errors: a
    # correct model passes, one that trains badly (lr, loop or labels wrong: 0.07 to
    # 0.9) fails.
    assert digits.x_test.shape == (539, 64)
    assert error(standard, digits) <= 0.07


def test_torch_mlp_is_deterministic_and_cacheable(digits: Split, tmp_path: Path) -> None:
    state = np.random.get_state()[1].copy()
    a = build_model("torch-mlp", digits, seed=5, device="cpu", cache_dir=tmp_path / "a")
    b = build_model("torch-mlp", digits, seed=5, device="cpu", cache_dir=tmp_path / "b")
    c = build_model("torch-mlp", digits, seed=6, device="cpu", cache_dir=tmp_path / "c")
    assert np.array_equal(np.random.get_state()[1], state)  # the global RNG is untouched
    pa, pb = a.predict_proba(digits.x_test), b.predict_proba(digits.x_test)
    assert np.array_equal(pa, pb)
    assert not np.array_equal(pa, c.predict_proba(digits.x_test))
    path = cache_path("torch-mlp", digits, seed=5, cache_dir=tmp_path / "a")
    assert path.exists()
    again = build_model("torch-mlp", digits, seed=5, device="cpu", cache_dir=tmp_path / "a")
    assert again is not a and np.array_equal(again.predict_proba(digits.x_test), pa)


def test_torch_mlp_takes_images_and_label_smoothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    from movingtarget.datasets import Dataset

    images = Dataset("imgs", rng.random((60, 1, 6, 6), dtype=np.float32), np.arange(60) % 3)
    split = images.split(seed=0)
    model = build_model(
        "torch-mlp", split, device="cpu", cache_dir=tmp_path, epochs=2, label_smoothing=0.1
    )
    assert model.input_shape == (1, 6, 6)
    assert model.predict_proba(split.x_test).shape == (len(split.x_test), 3)


# --------------------------------------------------------------------------- adv-mlp


def test_adversarial_training_does_not_lower_the_natural_error(
    digits: Split, standard_short: TorchModel, adversarial: TorchModel
) -> None:
    # Goodfellow (2019): adversarial training does not lower r on natural data.
    # Measured (seed 0): 0.0724 standard, 0.0705 adversarial, n = 539.
    n = len(digits.y_test)
    r_std, r_adv = error(standard_short, digits), error(adversarial, digits)
    assert r_adv >= r_std - 3 * se(r_std, n), (r_adv, r_std)


def test_adversarial_training_resists_fgsm(
    digits: Split, standard_short: TorchModel, adversarial: TorchModel
) -> None:
    # Measured (seed 0, eps 0.1): FGSM flips 0.410 of n = 500 correct answers of the
    # standard MLP and 0.202 of n = 501 of the adversarially trained one; the gap is
    # about 7 standard errors of a difference of two proportions. Trained on clean rows
    # only, adv-mlp would be torch-mlp exactly: a gap of 0.
    s_std, n_std = fgsm_success(standard_short, digits)
    s_adv, n_adv = fgsm_success(adversarial, digits)
    gap_se = math.sqrt(se(s_std, n_std) ** 2 + se(s_adv, n_adv) ** 2)
    assert s_std - s_adv > 3 * gap_se, (s_std, n_std, s_adv, n_adv)


def test_adv_mlp_is_deterministic(digits: Split) -> None:
    state = np.random.get_state()[1].copy()
    a = _train("adv-mlp", digits, epochs=1, max_iter=2)
    b = _train("adv-mlp", digits, epochs=1, max_iter=2)
    assert np.array_equal(np.random.get_state()[1], state)  # ART's draws are private
    assert np.array_equal(a.predict_proba(digits.x_test), b.predict_proba(digits.x_test))


# --------------------------------------------------------------------------- noise-mlp


def test_noise_training_keeps_the_natural_error_and_fgsm_is_reported(
    digits: Split, standard: TorchModel, noisy: TorchModel, record_property: Any
) -> None:
    # Same epochs and seed as `standard`: the noise is the only difference.
    n = len(digits.y_test)
    r_std, r_noise = error(standard, digits), error(noisy, digits)
    assert r_noise >= r_std - 3 * se(r_std, n), (r_noise, r_std)
    assert not np.array_equal(
        noisy.predict_proba(digits.x_test), standard.predict_proba(digits.x_test)
    )  # the noise was applied
    # Reported, not asserted: measured 0.415 (noise, sigma 0.1) against 0.489 (standard)
    # of about 517 each, about 2.4 standard errors apart, under the 3 we require; Gaussian
    # noise at this sigma is not a guaranteed defense against a worst-case direction.
    s_std, n_std = fgsm_success(standard, digits)
    s_noise, n_noise = fgsm_success(noisy, digits)
    record_property("fgsm_success_standard", f"{s_std:.3f} of {n_std}")
    record_property("fgsm_success_noise", f"{s_noise:.3f} of {n_noise}")
    print(
        f"FGSM eps=0.1 success: standard {s_std:.3f} (n={n_std}), noise {s_noise:.3f} (n={n_noise})"
    )


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("name", "params", "param"),
    [
        ("adv-mlp", {"eps": -0.1}, "eps"),
        ("adv-mlp", {"eps_step": 0}, "eps_step"),
        ("adv-mlp", {"max_iter": 0}, "max_iter"),
        ("adv-mlp", {"ratio": 1.5}, "ratio"),
        ("adv-mlp", {"epochs": 0}, "epochs"),
        ("torch-mlp", {"epochs": 0}, "epochs"),
        ("torch-mlp", {"batch_size": -1}, "batch_size"),
        ("torch-mlp", {"lr": 0.0}, "lr"),
        ("torch-mlp", {"hidden": 0}, "hidden"),
        ("torch-mlp", {"hidden": ()}, "hidden"),
        ("torch-mlp", {"label_smoothing": 1.0}, "label_smoothing"),
        ("noise-mlp", {"sigma": -1.0}, "sigma"),
        ("noise-mlp", {"epochs": 1.5}, "epochs"),
        ("adv-cnn", {"eps": -1}, "eps"),
    ],
)
def test_bad_parameters_are_named(
    digits: Split, tmp_path: Path, name: str, params: dict[str, Any], param: str
) -> None:
    with pytest.raises(ConfigError, match=rf"model {name!r}: {param} must"):
        build_model(name, digits, device="cpu", cache_dir=tmp_path, **params)


def test_adv_cnn_needs_images(digits: Split, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'adv-cnn' needs image inputs"):
        build_model("adv-cnn", digits, device="cpu", cache_dir=tmp_path)


def test_missing_art_names_the_extra(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys

        class NoArt:  # makes "import art" fail, as if ART were not installed
            def find_spec(self, name, path=None, target=None):
                if name == "art" or name.startswith("art."):
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, NoArt())
        from movingtarget.datasets import load_digits
        from movingtarget.errors import ConfigError
        from movingtarget.models import build_model
        split = load_digits().split(seed=0)
        build_model("noise-mlp", split, cache_dir=sys.argv[1], epochs=1)  # no ART needed
        try:
            build_model("adv-mlp", split, cache_dir=sys.argv[1])
        except ConfigError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'movingtarget[attacks]'" in out.stdout


def test_adversarial_training_raises_resilience_but_the_test_set_attack_still_wins(
    digits: Split, standard_short: TorchModel, adversarial: TorchModel
) -> None:
    """Papernot & McDaniel: smoothing raises resilience; Goodfellow: it does not stop
    the test set attack. The adversarially trained model's median minimal L∞
    perturbation (bisection along the FGSM ray) exceeds the standard model's by more
    than 3 standard errors of the difference (distribution-free median s.e.); the test
    set attack against it still gets the r~ its natural r predicts, within 3 s.e. of
    the geometric first mistake (plus 1/m)."""
    from movingtarget.attacks.perturb.estimators import wrap_model
    from movingtarget.attacks.perturb.minimal import minimal_perturbation
    from movingtarget.experiment.config import ResilienceConfig
    from movingtarget.experiment.resilience import comparison_row

    # the rows of the resilience report's smoothing table
    x, y = digits.x_test[:300], np.asarray(digits.y_test[:300], dtype=np.int64)
    y_test = np.asarray(digits.y_test, dtype=np.int64)
    res = ResilienceConfig(sweep_queries=1000)
    rows = []
    for label, model in (("torch-mlp", standard_short), ("adv-mlp", adversarial)):
        found = minimal_perturbation(
            wrap_model(model, clip_values=(0.0, 1.0)), x, y, method="fgsm", norm="inf"
        )
        values = {"inf": found.values}
        rows.append(comparison_row(label, model, digits.x_test, y_test, values, found.correct, res))
    std, adv = rows
    print(
        f"\nmedian minimal L-inf: torch-mlp {std['median_linf']:.4f} ± "
        f"{std['median_linf_se']:.4f}, adv-mlp {adv['median_linf']:.4f} ± "
        f"{adv['median_linf_se']:.4f}"
    )
    gap = adv["median_linf"] - std["median_linf"]
    assert gap > 3 * math.hypot(std["median_linf_se"], adv["median_linf_se"]), rows
    # the same natural r as the fixture-level check, from the table's own columns
    assert adv["r"] >= std["r"] - 3 * math.hypot(std["r_se"], adv["r_se"])
    wrong = adversarial.predict_proba(digits.x_test).argmax(axis=1) != digits.y_test
    assert adv["r"] == float(wrong.mean()) and adv["test_inputs"] == len(y_test)
    print(
        f"adv-mlp: r {adv['r']:.4f}, test set r~ predicted {adv['r_tilde_predicted']:.3f}, "
        f"measured {adv['r_tilde_measured']:.3f}"
    )
    # measured within 3 s.e. of the geometric first mistake (plus 1/m) of its prediction
    assert adv["r_tilde_agrees"], adv
    r, m = adv["r"], 1000
    spread = math.sqrt(1 - r) / (r * m)
    assert abs(adv["r_tilde_measured"] - adv["r_tilde_predicted"]) <= 3 * spread + 1 / m
