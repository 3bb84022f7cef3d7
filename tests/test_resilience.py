"""Resilience: the summaries' math, and ``movingtarget resilience`` run as a user runs it."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest

from movingtarget.errors import ConfigError
from movingtarget.experiment import load_config
from movingtarget.metrics.resilience import median_se, per_class, summarize
from test_cli import cli


def test_summary_counts_unfound_inputs_as_most_resilient():
    s = summarize(np.array([0.3, 0.1, np.inf, 0.2, 0.4, np.inf, 0.05, 0.6, 0.7, 0.8]), eps=0.25)
    assert (s.n, s.not_found) == (10, 2)
    assert s.median == 0.4  # the 5th of 10 sorted values (inverted CDF), infs ranked last
    assert s.p10 == 0.05
    assert s.below_eps == 0.3
    classes = per_class(np.array([1.0, 2.0, 3.0]), np.array([0, 1, 1]), eps=1.5)
    assert classes[1].n == 2 and classes[0].below_eps == 1.0


def test_median_standard_error_matches_the_normal_theory():
    """For n draws of N(0, 1) the median's s.e. is sqrt(pi / 2) / sqrt(n); the
    distribution-free estimate agrees within its own sampling error (about 1/sqrt(2
    sqrt(n)) relative, from the spread of two order statistics: 15 % at n = 10,000; the
    tolerance is 3 of those)."""
    n = 10_000
    rng = np.random.default_rng(0)
    truth = np.sqrt(np.pi / 2) / np.sqrt(n)
    rel = 1 / np.sqrt(2 * np.sqrt(n))
    estimates = [median_se(rng.standard_normal(n)) for _ in range(5)]
    assert abs(np.mean(estimates) / truth - 1) < 3 * rel / np.sqrt(5)
    assert median_se(np.array([1.0, np.inf, np.inf])) == np.inf


def test_resilience_config_fields_are_checked():
    cfg = load_config("hello-world", ["resilience.inputs=50", "resilience.eps_linf=0.05"])
    assert (cfg.resilience.inputs, cfg.resilience.eps_linf) == (50, 0.05)
    for bad, message in [
        ("resilience.eps_linf=-1", "eps_linf must be a number > 0"),
        ("resilience.l2_method=cw", "l2_method must be one of"),
        ("resilience.linf_method=deepfool", "deepfool measures L2 only"),
        ("resilience.inputs=0", "inputs must be an integer >= 1"),
        ("resilience.stepz=3", "unknown field resilience.'stepz'"),
        ("resilience.thresholds=[0.5, 1.5]", "thresholds must be a list of numbers in [0, 1)"),
        ("resilience.detection_false_alarm=1.5", "detection_false_alarm must be a number in (0,"),
        ("resilience.detection_inputs=-1", "detection_inputs must be an integer >= 0"),
        ('resilience.compare_models=["adv-mpl"]', "unknown model 'adv-mpl'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config("hello-world", [bad])


def test_resilience_command_prints_the_distribution_and_writes_the_report(tmp_path):
    out = tmp_path / "res"
    p = cli("resilience", "--out", str(out), "--inputs", "150", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "| model logistic | L2 |" in p.stdout and "median" in p.stdout
    assert "10th percentile" in p.stdout
    for name in (
        "resilience.md",
        "resilience.json",
        "resilience_hist.png",
        "resilience_classes.png",
        "resilience_sweep.png",
        "resilience_jsma.png",
    ):
        assert (out / name).stat().st_size > 0, name
    report = (out / "resilience.md").read_text()
    assert "## Confidence threshold" in report and "## Centroid-closeness detection" in report
    data = json.loads((out / "resilience.json").read_text())
    assert [row["min_confidence"] for row in data["sweep"]] == [0.0, 0.5, 0.7, 0.9, 0.95, 0.99]
    hits = np.array(data["jsma"]["success"], dtype=float)
    assert hits.shape == (10, 10) and np.isnan(np.diag(hits)).all()
    assert (
        data["jsma"]["pairs"] > 0
        and "## JSMA: source × target" in (out / "resilience.md").read_text()
    )
    groups = {(g["group"], g["norm"]): g for g in data["groups"]}
    model = groups[("model logistic", "inf")]
    assert 0 < model["median"] < 0.5 and model["p10"] <= model["median"]
    # abstention below 0.6 confidence: a wrong *answer* needs more than the bare ray
    plain = groups[("deterministic: wrong answer", "inf")]
    held = groups[("threshold-abstain-0.6: wrong answer", "inf")]
    gap = held["median"] - plain["median"]
    assert gap > 3 * np.hypot(held["median_se"], plain["median_se"])
    assert set(data["per_class"]["model logistic L2"]) == {str(c) for c in range(10)}
    kinds = [row["inputs"] for row in data["detection"]["rows"]]
    assert kinds[:4] == ["fgsm", "pgd", "deepfool", "jsma"] and "near-duplicates" in kinds[4]
    compared = [row["model"] for row in data["comparison"]]
    assert compared == ["logistic", "torch-mlp", "adv-mlp", "noise-mlp"]
    assert "## Smoothing baselines" in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "resilience.l2_method=fgsn"], "l2_method must be one of"),
        (["--set", "resilience.eps_l2=-0.5"], "eps_l2 must be a number > 0"),
        (
            ["--set", "model.name=mlp", "--set", "resilience.l2_method=deepfool"],
            "needs gradients",
        ),
    ],
)
def test_resilience_command_bad_input_is_one_clear_message(tmp_path, args, message):
    p = cli("resilience", "--out", str(tmp_path / "r"), "--inputs", "20", *args, cwd=tmp_path)
    assert p.returncode == 2
    assert message in p.stderr and "Traceback" not in p.stderr


def test_list_shows_the_per_input_attacks(tmp_path):
    p = cli("list", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for name in ("fgsm", "pgd", "jsma", "carlini-wagner", "deepfool", "hopskipjump", "square"):
        assert name in p.stdout


def test_threshold_sweep_trades_coverage_for_accuracy_and_the_test_set_attack_still_wins():
    """The sweep on digits (logistic, 600 held-out inputs): coverage cannot rise with
    ``min_confidence`` (a higher threshold answers a subset); accuracy on answered inputs
    and FGSM's success move as Papernot & McDaniel say, outside 3 binomial s.e.; and the
    test set attack's measured ``r~`` agrees with its prediction wherever ``r > 0``."""
    from movingtarget.attacks.perturb.estimators import data_range, wrap_model
    from movingtarget.datasets import load_dataset
    from movingtarget.experiment.config import ResilienceConfig
    from movingtarget.experiment.resilience import threshold_sweep
    from movingtarget.models import build_model

    split = load_dataset("digits").split(test_size=0.4, seed=0)
    model = build_model("logistic", split, seed=0)
    x, y = split.x_test[:600], np.asarray(split.y_test[:600], dtype=np.int64)
    est = wrap_model(model, clip_values=data_range(split.x_train), input_shape=split.input_shape)
    correct = model.predict_proba(x).argmax(axis=1) == y
    res = ResilienceConfig(thresholds=(0.0, 0.5, 0.8, 0.95), eps_linf=0.1)
    rows = threshold_sweep(model, est, x, y, np.ones(len(y)), correct, res)
    cover = [r["coverage"] for r in rows]
    assert cover[0] == 1.0 and all(a >= b for a, b in itertools.pairwise(cover))
    lo, hi = rows[0], rows[-1]

    def se(p: float, n: int) -> float:
        return float(np.sqrt(max(p * (1 - p), 1 / n) / n))

    gap = hi["accuracy_answered"] - lo["accuracy_answered"]
    assert gap > 3 * np.hypot(
        se(lo["accuracy_answered"], lo["answered"]), se(hi["accuracy_answered"], hi["answered"])
    )
    n = int(correct.sum())
    drop = lo["fgsm_success"] - hi["fgsm_success"]
    assert drop > 3 * np.hypot(se(lo["fgsm_success"], n), se(hi["fgsm_success"], n))
    assert lo["pgd_success"] >= lo["fgsm_success"] - 3 * se(lo["fgsm_success"], n)
    assert lo["r"] > 0 and lo["r_tilde_measured"] > 0.5
    assert all(r["r_tilde_agrees"] for r in rows if r["r"] > 0)


def test_centroid_detection_separates_attacks_better_than_benign_near_duplicates():
    """The report's detection table on digits (logistic, 400 held-out inputs; the
    detector calibrated on other test inputs): FGSM's and PGD's successful examples
    score above clean inputs (AUC > 0.5 by more than 3 Hanley-McNeil s.e.), and above
    them by more than benign near-duplicates (±0.02 noise) do, outside 3 s.e. of the
    difference. (The near-duplicates do separate a little, AUC 0.58 ± 0.02 here: the
    standardized-input features magnify noise on pixels that barely vary.)"""
    from movingtarget.attacks.perturb.estimators import data_range, wrap_model
    from movingtarget.datasets import load_dataset
    from movingtarget.defenses.near_repeat import split_unseen
    from movingtarget.experiment.config import ResilienceConfig
    from movingtarget.experiment.detection import ATTACKS, centroid_detection
    from movingtarget.models import build_model

    split = load_dataset("digits").split(test_size=0.5, seed=0)
    model = build_model("logistic", split, seed=0)
    x, y = split.x_test[:400], np.asarray(split.y_test[:400], dtype=np.int64)
    unseen = split_unseen(split.x_test[400:], 0)
    clip = data_range(split.x_train)
    est = wrap_model(model, clip_values=clip, input_shape=split.input_shape)
    correct = model.predict_proba(x).argmax(axis=1) == y
    res = ResilienceConfig(detection_inputs=150)
    d = centroid_detection(model, est, x, y, correct, unseen, clip, res, reference=split.x_train)
    rows = {row["inputs"]: row for row in d["rows"]}
    assert list(rows)[: len(ATTACKS)] == list(ATTACKS)
    for name in ATTACKS:
        print(f"\ncentroid vs {name}: AUC {rows[name]['auc']:.3f} ± {rows[name]['se']:.3f} "
              f"({rows[name]['n_attacked']} successful of {rows[name]['crafted']})")  # fmt: skip
    for name in ("fgsm", "pgd"):
        assert rows[name]["n_attacked"] >= 50
        assert rows[name]["auc"] > 0.5 + 3 * rows[name]["se"], rows[name]
    near = rows["benign near-duplicates (±0.02 noise)"]
    print(f"centroid vs near-duplicates: AUC {near['auc']:.3f} ± {near['se']:.3f}, "
          f"{near['detected']:.3f} above the threshold")  # fmt: skip
    for name in ("fgsm", "pgd"):
        gap = rows[name]["auc"] - near["auc"]
        assert gap > 3 * np.hypot(rows[name]["se"], near["se"]), (rows[name], near)
    assert d["calibration"]["n_calibration"] == len(unseen[0])
