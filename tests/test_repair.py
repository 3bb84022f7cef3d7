"""Asking for labels, the arena's oracle and the correction memory (real digits data)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from movingtarget import ConfigError
from movingtarget.answers import Reason
from movingtarget.arena import Arena, ArenaConfig
from movingtarget.attacks import build_adversary
from movingtarget.datasets import load_dataset
from movingtarget.defenses import Correct, GatedUpdate, LabelingQueue, build_defense
from movingtarget.defenses.near_repeat import calibrate_defense
from movingtarget.errors import InputError
from movingtarget.experiment.config import parse_config
from movingtarget.metrics.measured import attack_metrics
from movingtarget.models import build_model
from movingtarget.models.reference import mlp
from movingtarget.report.benign import update_lines

CORRECTED = int(Reason.CORRECTED)
#: The oracle of the measured runs: 10 labels per 100 queries, 20 queries late.
ORACLE = dict(oracle_budget=10, oracle_window=100, oracle_delay=20)
SEEDS = range(5)


@pytest.fixture(scope="module")
def digits():
    split = load_dataset("digits").split(test_size=0.3, seed=0)
    model = build_model("logistic", split, seed=0)
    return model, split


def deploy(model, split, defense, attack="test-set", seed=0, attack_params=None, **arena):
    d = build_defense(defense, model, seed=seed)
    calibrate_defense(d, split.x_train)  # the near variants' robust width, as experiments do
    a = build_adversary(
        attack, split.x_test, split.y_test, d.n_classes, seed=seed, **(attack_params or {})
    )
    cfg = ArenaConfig(queries=2000, benign_ratio=0.25, duplicate_share=0.1, **arena)
    ar = Arena(cfg)
    log = ar.run(d, [a], split.x_test, split.y_test, seed=seed, inputs=True)
    return log, ar, d


def pooled_r_tilde(model, split, defense, attack="test-set", attack_params=None, **arena):
    """``r~`` over SEEDS pooled, its binomial standard error, adversarial corrections."""
    wins = n = corrected = 0
    for seed in SEEDS:
        log, _, _ = deploy(model, split, defense, attack, seed, attack_params, **arena)
        m = attack_metrics(log)
        wins += round(m.r_tilde * m.queries)
        n += m.queries
        corrected += int(((log.reason == CORRECTED) & log.adversarial).sum())
    r = wins / n
    return r, np.sqrt(r * (1 - r) / n), corrected


def test_oracle_labels_end_the_exploited_mistakes(digits) -> None:
    model, split = digits
    log, arena, _ = deploy(model, split, "memorize-correct", **ORACLE)
    adv = log.adversarial
    corrected = (log.reason == CORRECTED) & adv
    assert corrected.sum() > 50
    # the oracle's labels are true: every corrected answer is the true class
    assert (log.answer[corrected] == log.y_true[corrected]).all()
    # a corrected query is an input the oracle labeled before it arrived
    labels = arena.oracle.history()
    for t in np.flatnonzero(corrected):
        known = labels.delivered_at <= log.t[t]
        assert (labels.x[known] == log.x[t]).all(axis=1).any()
    # the attacker had those inputs refused (repeat) before; now they are answered
    off, _, _ = deploy(model, split, "memorize-correct")
    assert not (off.reason == CORRECTED).any()
    assert attack_metrics(log).abstain_adversarial < attack_metrics(off).abstain_adversarial


def test_correction_lowers_r_tilde_against_random_answers(digits) -> None:
    model, split = digits
    r0, se0, c0 = pooled_r_tilde(model, split, "memorize-random", **ORACLE)
    r1, se1, c1 = pooled_r_tilde(
        model, split, "correct > memorize(on_repeat=random) > argmax", **ORACLE
    )
    assert c0 == 0 and c1 > 500
    # measured 0.845 -> 0.684 (5 seeds x 2000 queries)
    assert r1 < r0 - 3 * np.hypot(se0, se1)
    # with the oracle off the correction memory stays empty: r~ is memorize-random's
    r2, _, c2 = pooled_r_tilde(model, split, "correct > memorize(on_repeat=random) > argmax")
    assert c2 == 0 and r2 == r0


def test_near_correction_catches_noisy_repeats(digits) -> None:
    model, split = digits
    plain = "near-repeat(on_repeat=random) > argmax"
    r0, se0, _ = pooled_r_tilde(model, split, plain, "noisy-repeat", **ORACLE)
    near_plain, exact_plain = (f"correct(match={m}) > {plain}" for m in ("near", "exact"))
    r1, se1, near = pooled_r_tilde(model, split, near_plain, "noisy-repeat", **ORACLE)
    _, _, exact = pooled_r_tilde(model, split, exact_plain, "noisy-repeat", **ORACLE)
    # fresh noise on every repeat: only the near match recognises the labeled input
    assert near > 300 and exact < near / 10
    assert r1 < r0 - 3 * np.hypot(se0, se1)  # measured 0.838 -> 0.765


def test_near_repeat_correct_answers_what_it_refused(digits) -> None:
    model, split = digits
    patient = dict(patience=20)  # keeps repeating noisy copies through refusals
    quick = {**ORACLE, "oracle_delay": 5}  # the label comes while it still repeats
    log, _, _ = deploy(model, split, "near-repeat-correct", "noisy-repeat", 0, patient, **quick)
    corrected = (log.reason == CORRECTED) & log.adversarial & (log.noisy == 1)
    assert corrected.sum() > 50
    assert (log.answer[corrected] == log.y_true[corrected]).all()


@pytest.mark.parametrize("delay", [0, 7, 50])
def test_labels_arrive_after_the_delay(digits, delay: int) -> None:
    model, split = digits
    log, arena, d = deploy(model, split, "memorize-correct", oracle_budget=40, oracle_delay=delay)
    labels = arena.oracle.history()
    assert len(labels) > 10
    waited = labels.delivered_at - labels.asked_at
    # a label arrives once `delay` more queries were answered, not before
    assert (waited >= delay + 1).all()
    assert waited.min() == delay + 1  # one-query rounds: exactly then
    # no query is corrected before the label of its input arrived
    for t in np.flatnonzero(log.reason == CORRECTED):
        same = (labels.x == log.x[t]).all(axis=1)
        assert (labels.asked_at[same] + delay < log.t[t]).any()
    assert d.labels_learned == arena.oracle.delivered == len(labels)


@pytest.mark.parametrize(("budget", "window"), [(5, 0), (3, 100), (1, 250)])
def test_never_more_labels_than_the_budget(digits, budget: int, window: int) -> None:
    model, split = digits
    log, arena, d = deploy(
        model, split, "memorize-correct", oracle_budget=budget, oracle_window=window
    )
    q = arena.oracle
    labels = q.history()
    slots = labels.asked_at // window if window else np.zeros(len(labels), np.int64)
    per_slot = np.bincount(slots)
    assert per_slot.max() == budget  # the budget binds ...
    assert q.dropped > 0  # ... and what is over it is dropped
    assert q.asked == q.granted + q.dropped + q.already_asked
    assert q.granted == q.delivered + q.pending
    n_slots = (len(log) + window - 1) // window if window else 1
    assert q.granted <= budget * n_slots
    assert d.labels_learned == len(labels) == q.delivered


def test_oracle_off_keeps_every_event_log(digits) -> None:
    model, split = digits
    base, _, _ = deploy(model, split, "memorize-abstain", seed=3)
    # an empty correction memory changes nothing, and an oracle with nothing asking either
    empty, arena, _ = deploy(model, split, "memorize-correct", seed=3)
    assert arena.oracle is None
    assert empty.to_csv() == base.to_csv()
    silent, arena, _ = deploy(model, split, "memorize-abstain", seed=3, **ORACLE)
    assert silent.to_csv() == base.to_csv() and arena.oracle.asked == 0
    # random answers draw on the defense's generator: the correction gate must not
    rand, _, _ = deploy(model, split, "memorize-random", seed=3)
    same, _, _ = deploy(model, split, "correct > memorize(on_repeat=random) > argmax", seed=3)
    assert same.to_csv() == rand.to_csv()


@pytest.mark.parametrize("field", ["oracle_budget", "oracle_window", "oracle_delay"])
def test_bad_oracle_settings(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ArenaConfig(**{field: -1})


def test_unknown_ask_on_reason_and_match(digits) -> None:
    model, _ = digits
    with pytest.raises(ConfigError, match=r"ask_on.*'bogus'"):
        build_defense("correct(ask_on=repeat+bogus) > argmax", model)
    with pytest.raises(ConfigError, match="match"):
        Correct(match="fuzzy")
    with pytest.raises(ConfigError, match="budget"):
        LabelingQueue(-2)


def test_ask_on_chooses_the_troubling_queries(digits) -> None:
    model, split = digits
    x = np.concatenate([split.x_test[:3], split.x_test[:1]])
    only_low = build_defense(
        "correct(ask_on=low-confidence) > memorize > argmax > threshold(min_confidence=0.99)",
        model,
    )
    a = only_low.answer(x)
    assert (a.ask == (a.reasons == Reason.LOW_CONFIDENCE)).all()
    repeats = build_defense("correct(ask_on=repeat) > memorize > argmax", model)
    assert repeats.answer(x).ask.tolist() == [False, False, False, True]
    assert build_defense("memorize-abstain", model).answer(x).ask is None  # nobody asks
    assert "ask_on=repeat" in repeats.describe()


def test_learn_checks_its_labels(digits) -> None:
    model, split = digits
    d = build_defense("memorize-correct", model)
    with pytest.raises(InputError, match="classes"):
        d.learn(split.x_test[:2], [0, 10])
    with pytest.raises(InputError, match="labels of shape"):
        d.learn(split.x_test[:2], [0])
    assert build_defense("memorize-abstain", model).learn(split.x_test[:2], [0, 1]) == 0


def test_queue_asks_an_input_once() -> None:
    q = LabelingQueue(budget=10, delay=0)
    x = np.repeat(np.eye(2, dtype=np.float32), 3, axis=0)
    assert q.ask(x, np.zeros(6, np.int64), np.arange(6), np.zeros(6, np.int64)) == 2
    assert q.already_asked == 4 and len(q.due(6)) == 2 and q.pending == 0


@pytest.fixture(scope="module")
def online(digits):
    """An online model (MLP, partial_fit), a canary half of the test set, a pool half."""
    _, split = digits
    model = mlp(split, max_iter=50, seed=0)
    xt, yt = split.x_test, split.y_test
    return model, (xt[::2], yt[::2]), (xt[1::2], yt[1::2])


def test_poisoning_is_rolled_back_honest_labels_are_kept(online) -> None:
    model, canary, (px, py) = online
    gate = GatedUpdate(*canary, tolerance=0.02, steps=10)
    d = build_defense("memorize-correct", model, update=gate)
    deployed = model.predict_proba(canary[0])
    assert d.learn(px, (py + 1) % 10) == len(py)  # every label wrong: a poisoning attempt
    poison = d.repairs[-1]
    assert not poison.accepted and poison.drop > 0.02  # measured 0.956 -> 0.741
    assert np.array_equal(model.predict_proba(canary[0]), deployed)  # exactly as it was
    d.learn(px, py)  # the true classes
    honest = d.repairs[-1]
    assert honest.accepted and honest.drop <= 0.02
    assert [r.accepted for r in d.repairs] == [False, True]
    d.reset()  # a new deployment starts from the deployed model
    assert np.array_equal(model.predict_proba(canary[0]), deployed)


def test_gated_update_learns_from_the_oracle(online) -> None:
    model, canary, (px, py) = online
    gate = GatedUpdate(*canary, tolerance=0.02)
    d = build_defense("memorize-correct", model, update=gate)
    a = build_adversary("test-set", px, py, d.n_classes, seed=0)
    arena = Arena(ArenaConfig(queries=1000, benign_ratio=0.1, **ORACLE))
    arena.run(d, [a], px, py, seed=0)
    assert len(d.repairs) > 5
    assert sum(r.labels for r in d.repairs) == arena.oracle.delivered == d.labels_learned
    assert all(r.drop <= 0.02 for r in d.repairs if r.accepted)
    d.reset()


def test_update_needs_an_online_model(digits) -> None:
    model, split = digits  # logistic regression: no partial_fit
    with pytest.raises(ConfigError, match=r"update.*partial_fit"):
        build_defense("memorize-correct", model, update=GatedUpdate(split.x_test, split.y_test))
    with pytest.raises(ConfigError, match="tolerance"):
        GatedUpdate(split.x_test, split.y_test, tolerance=-0.1)


def test_oracle_settings_in_an_experiment_config() -> None:
    base = {"defenses": ["memorize-correct"], "attacks": ["test-set"]}
    cfg = parse_config({**base, "arena": {"oracle_budget": 5, "oracle_delay": 3}})
    assert (cfg.arena.oracle_budget, cfg.arena.oracle_window, cfg.arena.oracle_delay) == (5, 0, 3)
    with pytest.raises(ConfigError, match="oracle_delay"):
        parse_config({**base, "arena": {"oracle_delay": -4}})


def _learning_config(update: dict[str, Any]) -> Any:
    return parse_config(
        {
            "seeds": 2,
            "defenses": [
                "deterministic",
                {
                    "name": "learns",
                    "mechanisms": "correct > memorize(on_repeat=abstain) > argmax",
                    "update": update,
                },
            ],
            "attacks": ["test-set"],
            "dataset": {"name": "digits"},
            "model": {"name": "pool", "members": 2, "member": "mlp"},
            "arena": {"queries": 300, "oracle_budget": 10, "oracle_window": 100},
        }
    )


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"tolerence": 0.1}, "unknown field defenses[1].update.'tolerence' (did you mean"),
        ({"tolerance": 2}, "defenses[1].update: tolerance must be in [0, 1]"),
        ({"tolerance": "low"}, "defenses[1].update.tolerance must be an integer or a number"),
        ({"steps": 0}, "defenses[1].update: steps must be an integer >= 1"),
        ({"canary": 0}, "defenses[1].update.canary must be an integer >= 1"),
        ({"canary": True}, "defenses[1].update.canary must be an integer >= 1"),
    ],
)
def test_a_bad_update_table_names_the_field(update: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _learning_config(update)
    assert message in str(err.value)


def test_a_config_gates_model_updates_on_a_canary_per_deployment(tmp_path: Path) -> None:
    # a pool of online members learns from the oracle's labels, each update gated; the
    # deterministic defense of the same run sees the model as trained (each deployment
    # that learns has its own copy), so its results equal a run without the learner
    from movingtarget.experiment.runner import run_experiment

    cfg = _learning_config({"tolerance": 0.0, "canary": 150})
    run_experiment(cfg, tmp_path / "both", workers=1)
    runs = json.loads((tmp_path / "both" / "runs.json").read_text())
    learner = [r for r in runs if r["defense"] == "learns"]
    assert all(r["updates"] > 0 for r in learner)
    # tolerance 0: an update that costs any canary accuracy is rolled back; some are
    assert sum(r["updates_rolled_back"] for r in learner) > 0
    assert update_lines(runs)[0].startswith("Gated model updates: learns ")
    alone = dataclasses.replace(cfg, defenses=cfg.defenses[:1])
    run_experiment(alone, tmp_path / "alone", workers=1)
    fixed = [r for r in runs if r["defense"] == "deterministic"]
    again = json.loads((tmp_path / "alone" / "runs.json").read_text())
    assert [r["r_tilde"] for r in fixed] == [r["r_tilde"] for r in again]
    assert all(r["updates"] == 0 for r in fixed)


def test_a_pool_of_logistic_members_cannot_learn() -> None:
    split = load_dataset("digits").split(seed=0)
    pool = build_model("pool", split, members=2, member="logistic")
    with pytest.raises(ConfigError, match="no partial_fit"):
        GatedUpdate(split.x_test[:10], split.y_test[:10]).check(pool)
