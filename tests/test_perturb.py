"""Per-input attacks through ART: adapters, the registry, the traps, minimal perturbations.

Statistical checks use fixed seeds and tolerances of 3 binomial standard errors,
``sqrt(p (1 - p) / n)``, on the held-out digits (539 inputs).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from movingtarget.answers import ABSTAIN
from movingtarget.attacks.perturb import PER_INPUT_ATTACKS, craft
from movingtarget.attacks.perturb.estimators import (
    DefenseOracle,
    Refused,
    wrap_defense,
    wrap_model,
)
from movingtarget.attacks.perturb.minimal import minimal_perturbation
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense
from movingtarget.errors import ConfigError
from movingtarget.models import TorchModel, build_model


def se(p: float, n: int) -> float:
    return float(np.sqrt(max(p * (1 - p), 1e-12) / n))


@pytest.fixture(scope="module")
def split():
    return load_dataset("digits").split(test_size=0.3, seed=0)


@pytest.fixture(scope="module")
def mlp(split):
    """A 64-unit torch MLP on digits (about 3 % natural error), trained in a second."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        xt, yt = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
        order = np.random.default_rng(0)
        for _ in range(30):
            for idx in np.array_split(order.permutation(len(yt)), len(yt) // 64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
                opt.step()
    net.eval()
    return TorchModel(net, 10, input_shape=(64,), device="cpu")


@pytest.fixture(scope="module")
def est(mlp):
    return wrap_model(mlp, clip_values=(0.0, 1.0))


def test_fgsm_raises_the_error_far_above_natural_and_pgd_does_at_least_as_well(split, mlp, est):
    x, y = split.x_test, split.y_test
    n = len(y)
    r = float((mlp.predict_proba(x).argmax(axis=1) != y).mean())
    fgsm = craft("fgsm", est, x, y, eps=0.1)
    pgd = craft("pgd", est, x, y, eps=0.1)
    err_fgsm, err_pgd = float((fgsm.adv != y).mean()), float((pgd.adv != y).mean())
    assert fgsm.linf.max() <= 0.1 + 1e-6 and pgd.linf.max() <= 0.1 + 1e-6
    assert r < 0.08
    # "well above": more than ten times the natural rate, and 3 s.e. beyond it
    assert err_fgsm > 10 * r and err_fgsm - r > 3 * (se(err_fgsm, n) + se(r, n))
    # PGD contains FGSM's step in its search: not worse beyond sampling noise
    assert err_pgd >= err_fgsm - 3 * se(err_fgsm, n)


def test_jsma_reaches_chosen_targets_with_few_features(split, mlp, est):
    """Every source–target pair over 60 correctly classified digits (540 attacks):
    success >= 0.9 with at most 30 % of features changed (Papernot et al. 2016 report
    97.05 % with 4.02 % of features on MNIST)."""
    x, y = split.x_test, split.y_test
    ok = mlp.predict_proba(x).argmax(axis=1) == y
    xs, ys = x[ok][:60], y[ok][:60]
    src = np.repeat(np.arange(len(ys)), 9)
    tgt = (ys[src] + np.tile(np.arange(1, 10), len(ys))) % 10
    out = craft("jsma", est, xs[src], ys[src], target=tgt)
    # ART changes features in pairs, so gamma = 0.3 can end one pair past 30 %: a
    # success counts only within the 30 % budget
    within = out.success & (out.l0 <= 0.3 + 1e-9)
    assert within.mean() >= 0.9
    assert bool((out.adv[out.success] == tgt[out.success]).all())
    assert np.mean(out.l0[within]) < 0.15  # a few features, not a blur


def test_every_registered_attack_runs_on_a_torch_model(split, est):
    x, y = split.x_test[:6], split.y_test[:6]
    small = {
        "pgd": {"max_iter": 5},
        "carlini-wagner": {"max_iter": 5, "binary_search_steps": 2},
        "deepfool": {"max_iter": 20},
        "hopskipjump": {"max_iter": 2, "max_eval": 100, "init_eval": 10},
        "square": {"max_iter": 20},
        "simba": {"max_iter": 50},
        "boundary": {"max_iter": 10},
    }
    for name in PER_INPUT_ATTACKS:
        out = craft(name, est, x, y, **small.get(name, {}))
        assert out.x_adv.shape == x.shape and out.x_adv.dtype == np.float32, name
        assert out.x_adv.min() >= 0.0 - 1e-6 and out.x_adv.max() <= 1.0 + 1e-6, name


def test_float64_inputs_work_for_hopskipjump_on_a_torch_model(split, est):
    """ART's HopSkipJump builds float64 arrays of its own with numpy 2; without the
    float32 cast in front of the network it fails on mismatched dtypes."""
    x = split.x_test[:3].astype(np.float64)
    kw = {"max_iter": 2, "max_eval": 100, "init_eval": 10}
    out = craft("hopskipjump", est, x, split.y_test[:3], **kw)
    assert out.x_adv.dtype == np.float32 and out.x_adv.shape == x.shape
    assert out.x_adv.min() >= 0.0 and out.x_adv.max() <= 1.0


def test_art_needs_packaging_and_says_which_extra(tmp_path):
    """ART imports ``packaging`` without declaring it: a missing one names the extra."""
    code = (
        "import sys; sys.modules['packaging'] = None\n"
        "from movingtarget.attacks.perturb.estimators import import_art\n"
        "from movingtarget.errors import ConfigError\n"
        "try:\n    import_art()\nexcept ConfigError as e:\n    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert "packaging" in out.stdout and "movingtarget[attacks]" in out.stdout


def test_logistic_regression_gives_gradients_through_its_scaler(split):
    model = build_model("logistic", split)
    est = wrap_model(model, clip_values=(0.0, 1.0))
    assert est.gives("gradients")
    # ART's view of the model is the model: same classes on every held-out input
    same = est.predict_labels(split.x_test) == model.predict_proba(split.x_test).argmax(axis=1)
    assert same.all()


def test_an_attack_needing_gradients_on_a_model_without_them_names_the_fix(split):
    est = wrap_model(build_model("mlp", split), clip_values=(0.0, 1.0))
    assert est.capabilities == ("scores", "labels")
    with pytest.raises(ConfigError, match=r"needs gradients.*hopskipjump"):
        craft("fgsm", est, split.x_test[:2])


@pytest.mark.parametrize(
    ("name", "budget", "message"),
    [
        ("fgsn", {}, "did you mean 'fgsm'"),
        ("fgsm", {"eps": -0.1}, "eps must be >= 0"),
        ("fgsm", {"epsilon": 0.1}, "unknown budget field 'epsilon'"),
        ("pgd", {"max_iter": 2.5}, "max_iter must be an integer"),
        ("deepfool", {"max_iter": "10"}, "max_iter must be a number"),
    ],
)
def test_bad_attack_configs_get_one_clear_message(split, est, name, budget, message):
    with pytest.raises(ConfigError, match=message):
        craft(name, est, split.x_test[:2], split.y_test[:2], **budget)


def test_bad_norm_and_targeting_are_refused(split, est):
    with pytest.raises(ConfigError, match="norms 2"):
        craft("deepfool", est, split.x_test[:2], norm="inf")
    with pytest.raises(ConfigError, match="untargeted only"):
        craft("deepfool", est, split.x_test[:2], target=np.array([1, 2]))


def test_a_defense_answers_the_attack_and_abstentions_follow_the_rule(split, mlp):
    x = split.x_test[:4]
    for rule, row in [("uniform", np.full(10, 0.1)), (3, np.eye(10)[3])]:
        oracle = DefenseOracle(build_defense("memorize-abstain", mlp), on_abstain=rule)
        first, again = oracle(x), oracle(x)
        assert (first.max(axis=1) == 1.0).all()  # answered: one-hot
        np.testing.assert_allclose(again, np.tile(row, (4, 1)), rtol=1e-6)
        assert (oracle.queries, oracle.refused) == (8, 4)
    oracle = DefenseOracle(build_defense("memorize-abstain", mlp), on_abstain="raise")
    oracle(x)
    with pytest.raises(Refused):
        oracle(x)
    with pytest.raises(ConfigError, match="on_abstain"):
        DefenseOracle(build_defense("memorize-abstain", mlp), on_abstain=10)


def test_labels_only_attacks_run_through_a_defense_and_score_attacks_are_refused(split, mlp):
    defense = build_defense("threshold-abstain", mlp)
    est = wrap_defense(defense, clip_values=(0.0, 1.0), input_shape=(64,))
    assert est.capabilities == ("labels",)
    with pytest.raises(ConfigError, match="needs scores"):
        craft("square", est, split.x_test[:2])
    out = craft("hopskipjump", est, split.x_test[:2], split.y_test[:2], max_iter=2, max_eval=100)
    assert est.oracle is not None and est.oracle.queries > 100
    assert out.x_adv.shape == (2, 64)
    assert ABSTAIN == -1


def test_fgsm_ray_bisection_finds_the_boundary(split, mlp, est):
    """At the reported L∞ size the class has changed; a step 2**-steps of the bound
    smaller, it has not (the bisection's invariant), input by input."""
    x, y = split.x_test[:100], split.y_test[:100]
    res = minimal_perturbation(est, x, y, method="fgsm", norm="inf", steps=12)
    ok = np.flatnonzero(res.found)
    assert len(ok) > 0.9 * res.correct.sum()
    onehot = np.eye(10, dtype=np.float32)[y[ok]]
    ray = np.sign(est.art.loss_gradient(x[ok], onehot))
    at = np.clip(x[ok] + res.values[ok][:, None] * ray, 0, 1)
    below = np.clip(x[ok] + (res.values[ok][:, None] - 2.0**-12) * ray, 0, 1)
    assert (est.predict_labels(at) != y[ok]).all()
    assert (est.predict_labels(below) == y[ok]).all()
    assert (res.values[~res.correct] == 0).all()


def test_pgd_needs_no_larger_perturbation_than_the_fgsm_ray(split, est):
    x, y = split.x_test[:150], split.y_test[:150]
    ray = minimal_perturbation(est, x, y, method="fgsm", norm="inf")
    pgd = minimal_perturbation(est, x, y, method="pgd", norm="inf")
    both = ray.found & pgd.found
    # PGD starts along the same gradient sign and iterates: within the bisection step
    assert np.median(pgd.values[both]) <= np.median(ray.values[both]) + 2.0**-10


def test_minimal_perturbation_input_errors(split, est):
    black = wrap_model(build_model("mlp", split), clip_values=(0.0, 1.0))
    with pytest.raises(ConfigError, match=r"needs gradients.*hopskipjump"):
        minimal_perturbation(black, split.x_test[:2], split.y_test[:2], method="deepfool")
    with pytest.raises(ConfigError, match="method must be one of"):
        minimal_perturbation(est, split.x_test[:2], split.y_test[:2], method="cw")
    with pytest.raises(ConfigError, match="norm 2"):
        minimal_perturbation(est, split.x_test[:2], split.y_test[:2], method="deepfool", norm="inf")


def test_jsma_matrix_counts_each_source_target_pair(split, mlp, est):
    """The report's source × target matrix: 3 correct inputs per class sent to each of
    the 9 other classes (270 pairs); every off-diagonal cell holds the same number of
    pairs, so their mean is the overall success, which clears 0.9 as above."""
    from movingtarget.experiment.resilience import jsma_matrix

    x, y = split.x_test, np.asarray(split.y_test, dtype=np.int64)
    correct = mlp.predict_proba(x).argmax(axis=1) == y
    out = jsma_matrix(est, x, y, correct, 10, per_class=3)
    hits = np.array(out["success"], dtype=float)
    assert out["pairs"] == 270 and np.isnan(np.diag(hits)).all()
    assert np.isclose(np.nanmean(hits), out["success_rate"])
    assert out["success_rate"] >= 0.9 and out["features_changed"] < 0.15
