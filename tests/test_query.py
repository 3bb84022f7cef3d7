"""Query-based black-box attacks bridged into the arena: every query on the timeline,
the abstain mappings, the attacker's cache, the budget stopping the attack, and
the query-trajectory features."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from movingtarget.arena import Arena, ArenaConfig
from movingtarget.arena.arena import ADVERSARY_CLIENT
from movingtarget.attacks import ATTACKS, build_adversary
from movingtarget.attacks.query import ArtAttack, QueryAdversary, Sources
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense
from movingtarget.defenses.near_repeat import calibrate_defense
from movingtarget.errors import ConfigError
from movingtarget.experiment.runner import make_pools
from movingtarget.metrics.trajectory import first_detection, trajectory, trajectory_metrics
from movingtarget.models import build_model

pytest.importorskip("art")

#: Small budgets: each source input costs tens to hundreds of queries.
HSJ = {"max_iter": 5, "max_eval": 100, "init_eval": 10, "init_size": 10}
SQUARE = {"max_iter": 50}
BUDGETS = {"hopskipjump": HSJ, "square": SQUARE}
M = 1000


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    split = load_dataset("digits").split(test_size=0.5, seed=0)
    model = build_model("logistic", split, seed=0, cache_dir=None)
    pools = make_pools(split.x_test, split.y_test, "split", 0)
    return split, model, pools


def _defense(digits: Any, name: str) -> Any:
    split, model, pools = digits
    defense = build_defense(name, model, seed=0)
    calibrate_defense(defense, split.x_train, pools.benign_x, seed=0)
    return defense


def _alone(digits: Any, adv: Any, queries: int) -> Any:
    """``adv`` alone (no benign traffic) against the deterministic defense, inputs kept."""
    _, _, pools = digits
    return Arena(ArenaConfig(queries=queries, benign_ratio=0)).run(
        _defense(digits, "deterministic"),
        [adv],
        pools.benign_x,
        pools.benign_y,
        seed=0,
        inputs=True,
    )


class CountingDefense:
    """The defense, counting the rows each client sent (independently of the log)."""

    def __init__(self, defense: Any) -> None:
        self.defense = defense
        self.n_classes = defense.n_classes
        self.adversarial = 0
        self.benign = 0

    def answer(self, x: Any, clients: Any = None, times: Any = None) -> Any:
        clients = np.asarray(clients)
        self.adversarial += int((clients >= ADVERSARY_CLIENT).sum())
        self.benign += int((clients < ADVERSARY_CLIENT).sum())
        return self.defense.answer(x, clients, times)

    def reset(self) -> None:
        self.defense.reset()


@pytest.mark.parametrize("name", ["hopskipjump", "square"])
def test_event_log_has_one_row_per_query_the_art_attack_made(digits, name: str) -> None:  # type: ignore[no-untyped-def]
    pools = digits[2]
    art = ArtAttack(name, pools.attacker_x.shape[1:], 10, (0.0, 1.0), **BUDGETS[name])
    asked = {"rows": 0, "answered": 0, "last": 0}

    def counted(predict: Any, sources: Sources) -> Any:
        def counting(x: Any) -> Any:  # every call ART makes, counted here
            asked["rows"] += len(x)
            asked["last"] = len(x)
            out = predict(x)
            asked["answered"] += len(x)
            return out

        return art(counting, sources)

    adv = QueryAdversary(pools.attacker_x, pools.attacker_y, 10, attack=counted, cache=False)
    defense = CountingDefense(_defense(digits, "deterministic"))
    log = Arena(ArenaConfig(queries=M, benign_ratio=0.1)).run(
        defense,  # type: ignore[arg-type]
        [adv],
        pools.benign_x,
        pools.benign_y,
        seed=0,
    )
    rows = int((log.adversary == 0).sum())
    assert rows == M == defense.adversarial  # the defense answered each logged query once
    assert len(log) - rows == defense.benign == int(0.1 * M)
    # without a cache, every row ART asked is one query: the answered ones, and a share
    # of the last ask when the budget ran out in its middle (or none of it, when ART
    # asked again after the budget's last answer)
    assert asked["answered"] <= rows <= asked["rows"]
    assert asked["rows"] - rows <= asked["last"]
    assert adv.sent == asked["answered"] <= rows <= adv.asked <= asked["rows"]
    # interleaved with benign traffic on one timeline
    assert (np.diff(log.t) == 1).all()
    assert not adv.alive


def test_a_user_attack_function_is_bridged_query_by_query(digits) -> None:  # type: ignore[no-untyped-def]
    _, _, pools = digits
    rng = np.random.default_rng(1)
    sizes: list[int] = []

    def walk(predict: Any, sources: Sources) -> None:
        x = sources.x.copy()
        for _ in range(5):
            n = int(rng.integers(1, 4))
            sizes.append(n)
            predict(np.repeat(x, n, axis=0) + rng.normal(0, 0.01, (n, *x.shape[1:])))

    adv = QueryAdversary(pools.attacker_x, pools.attacker_y, 10, attack=walk, cache=False)
    defense = CountingDefense(_defense(digits, "deterministic"))
    log = Arena(ArenaConfig(queries=200, benign_ratio=0)).run(
        defense,  # type: ignore[arg-type]
        [adv],
        pools.benign_x,
        pools.benign_y,
        seed=0,
    )
    assert len(log) == 200 == defense.adversarial
    assert sum(sizes[:-1]) <= 200 <= sum(sizes)
    assert log.noisy.all()  # perturbed copies of their sources
    assert not adv.alive


def test_the_budget_stops_the_attack_even_one_that_swallows_errors(digits) -> None:  # type: ignore[no-untyped-def]
    _, _, pools = digits

    def stubborn(predict: Any, sources: Sources) -> None:
        k = 0
        while True:  # never ends by itself, and catches every Exception
            k += 1
            try:
                predict(sources.x + k * 1e-3)
            except Exception:  # the point: an attack that swallows errors
                continue

    adv = QueryAdversary(pools.attacker_x, pools.attacker_y, 10, attack=stubborn)
    defense = _defense(digits, "deterministic")
    log = Arena(ArenaConfig(queries=50, benign_ratio=0)).run(
        defense, [adv], pools.benign_x, pools.benign_y, seed=0
    )
    assert len(log) == 50
    assert adv._attack is not None and adv._attack.dead and not adv.alive


def test_an_error_in_the_attack_reaches_the_arena_and_the_attack_ends(digits) -> None:  # type: ignore[no-untyped-def]
    _, _, pools = digits

    def broken(predict: Any, sources: Sources) -> None:
        predict(sources.x)
        raise ValueError("attack bug")

    adv = QueryAdversary(pools.attacker_x, pools.attacker_y, 10, attack=broken)
    with pytest.raises(ValueError, match="attack bug"):
        Arena(ArenaConfig(queries=50, benign_ratio=0)).run(
            _defense(digits, "deterministic"), [adv], pools.benign_x, pools.benign_y, seed=0
        )
    assert adv._attack is not None and adv._attack.dead and not adv.alive


def _seen_scores(digits: Any, on_abstain: str, cache: bool, **kw: Any) -> tuple[Any, list[Any]]:
    """What an attack that asks about its source twice read from memorize-abstain."""
    _, _, pools = digits
    seen: list[Any] = []

    def twice(predict: Any, sources: Sources) -> None:
        seen.append((int(sources.y[0]), predict(sources.x)[0], predict(sources.x)[0]))

    adv = QueryAdversary(
        pools.attacker_x,
        pools.attacker_y,
        10,
        attack=twice,
        on_abstain=on_abstain,
        cache=cache,
        **kw,
    )
    log = Arena(ArenaConfig(queries=20, benign_ratio=0)).run(
        _defense(digits, "memorize-abstain"), [adv], pools.benign_x, pools.benign_y, seed=0
    )
    return (adv, log), seen


def test_abstain_mappings(digits) -> None:  # type: ignore[no-untyped-def]
    (adv, log), seen = _seen_scores(digits, "uniform", cache=False)
    assert (log.answer[1::2] == -1).all()  # the second ask is refused: an exact repeat
    _, first, second = seen[0]
    assert first.max() == 1.0 and np.allclose(second, 0.1)  # uniform: argmax reads class 0
    (adv, _), seen = _seen_scores(digits, "class", cache=False)
    y, _, second = seen[0]
    assert second.argmax() == y and second.max() == 1.0  # the source's own class
    (adv, _), seen = _seen_scores(digits, "class", cache=False, abstain_class=7)
    assert seen[0][2].argmax() == 7
    (adv, _), seen = _seen_scores(digits, "raise", cache=False)
    assert seen == [] and adv.abandoned >= 5  # every call stopped at its second ask
    with pytest.raises(ConfigError, match="on_abstain"):
        QueryAdversary(
            np.zeros((1, 2), np.float32),
            np.zeros(1, np.int64),
            2,
            attack=print,
            on_abstain="ignore",
        )


def test_the_cache_never_resends_an_input(digits) -> None:  # type: ignore[no-untyped-def]
    (adv, log), seen = _seen_scores(digits, "raise", cache=True)
    # each second ask answered by the attacker, the 20th too: it costs no query
    assert adv.cached == len(seen) == 20
    assert (log.answer != -1).all()  # so exact memorization never refuses
    assert len(set(log.source.tolist())) == 20


def test_adversary_batch_is_refused(digits) -> None:  # type: ignore[no-untyped-def]
    _, _, pools = digits
    adv = build_adversary("square", pools.attacker_x, pools.attacker_y, 10, **SQUARE)
    with pytest.raises(ConfigError, match="adversary_batch"):
        Arena(ArenaConfig(queries=20, benign_ratio=0, adversary_batch=4)).run(
            _defense(digits, "deterministic"), [adv], pools.benign_x, pools.benign_y, seed=0
        )
    assert not adv.alive


def test_registered_with_art_budgets_and_checked(digits) -> None:  # type: ignore[no-untyped-def]
    _, _, pools = digits
    assert {"hopskipjump", "square", "simba", "boundary"} <= set(ATTACKS.names())
    adv = build_adversary("hopskipjump", pools.attacker_x, pools.attacker_y, 10, max_iter=3)
    assert adv.attack.budget["max_iter"] == 3 and adv.attack.budget["max_eval"] == 1000
    with pytest.raises(ConfigError, match="unknown budget field"):
        build_adversary("square", pools.attacker_x, pools.attacker_y, 10, max_eval=3)
    with pytest.raises(ConfigError, match="untargeted only"):
        build_adversary("square", pools.attacker_x, pools.attacker_y, 10, target=3)


def test_square_refuses_inputs_too_narrow_for_its_tiles() -> None:
    # Spambase's 57 features are seen as a 3x19 image; ART's Square starts with tiles of
    # side round(sqrt(p_init * 57)) and fails with a bare ValueError when one is not
    # narrower than 3: refused when the adversary is built, naming the largest p_init
    x = np.random.default_rng(0).random((4, 57)).astype(np.float32)
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ConfigError, match=r"3x19 image.*p_init=0.8.*at most 0.109"):
        build_adversary("square", x, y, 2)
    ok = build_adversary("square", x, y, 2, p_init=0.109)  # round(sqrt(6.2)) = 2 < 3
    assert ok.attack.budget["p_init"] == 0.109
    with pytest.raises(ConfigError, match="at most"):
        build_adversary("square", x, y, 2, p_init=0.11)  # round(sqrt(6.27)) = 3


def test_missing_art_names_the_attacks_extra(monkeypatch, digits) -> None:  # type: ignore[no-untyped-def]
    _, _, pools = digits
    monkeypatch.setitem(sys.modules, "art", None)
    with pytest.raises(ConfigError, match=r"movingtarget\[attacks\]"):
        build_adversary("square", pools.attacker_x, pools.attacker_y, 10)


def test_square_and_simba_are_seeded(digits) -> None:  # type: ignore[no-untyped-def]
    _, _, pools = digits
    logs = []
    for _ in range(2):
        adv = build_adversary("square", pools.attacker_x, pools.attacker_y, 10, seed=3, **SQUARE)
        logs.append(_alone(digits, adv, 200))
    assert logs[0].x is not None and logs[1].x is not None
    assert np.array_equal(logs[0].x, logs[1].x)


DEFENSES = ("memorize-abstain", "near-repeat-abstain")


def test_hopskipjump_and_square_against_memories(digits) -> None:  # type: ignore[no-untyped-def]
    """The figures of docs/attacks.md (printed with ``pytest -s``)."""
    _, _, pools = digits
    found: dict[tuple[str, str, bool], dict[str, Any]] = {}
    print(f"\nm={M}, benign_ratio=0.1, digits, logistic, on_abstain=raise")
    print(
        "attack       defense              cache  first_detection  duplicate_share  "
        "step_cosine  step_l2  benign_step_cosine  benign_step_l2"
    )
    for name in ("hopskipjump", "square"):
        for defense_name in DEFENSES:
            for cache in (True, False):
                adv = build_adversary(
                    name,
                    pools.attacker_x,
                    pools.attacker_y,
                    10,
                    seed=0,
                    cache=cache,
                    **BUDGETS[name],
                )
                log = Arena(ArenaConfig(queries=M, benign_ratio=0.1)).run(
                    _defense(digits, defense_name),
                    [adv],
                    pools.benign_x,
                    pools.benign_y,
                    seed=0,
                    inputs=True,
                )
                t = trajectory_metrics(log, 0)
                found[name, defense_name, cache] = t
                print(
                    f"{name:12} {defense_name:20} {cache!s:6} {t['first_detection']!s:16} "
                    f"{t['duplicate_share']:<16.3f} {t['step_cosine']:<12.3f} {t['step_l2']:<8.3f} "
                    f"{t['benign_step_cosine']:<19.3f} {t['benign_step_l2']:.3f}"
                )
                assert not adv.alive
    for name in ("hopskipjump", "square"):
        # the approximate memory detects both attacks within the budget, cache or not
        for cache in (True, False):
            first = found[name, "near-repeat-abstain", cache]["first_detection"]
            assert first is not None and first <= M
        # with the cache, the attacker never sends an exact duplicate: exact memory is blind
        assert found[name, "memorize-abstain", True]["duplicate_share"] == 0.0
        assert found[name, "memorize-abstain", True]["first_detection"] is None
        # without it, the attacker re-sends inputs and exact memory refuses them
        assert found[name, "memorize-abstain", False]["first_detection"] is not None
        assert found[name, "memorize-abstain", False]["duplicate_share"] > 0
    # Square asks about its clean input twice: refused at query 2
    assert found["square", "memorize-abstain", False]["first_detection"] == 2


def test_trajectory_features() -> None:
    walk = np.cumsum(np.ones((10, 4)), axis=0)  # a straight walk: every step the same
    t = trajectory(walk)
    assert t.duplicate_share == 0.0 and t.step_cosine == pytest.approx(1.0)
    zigzag = np.array([[0.0, 0], [1, 0], [0, 0], [1, 0]])
    t = trajectory(zigzag)
    assert t.duplicate_share == 0.5 and t.step_cosine == pytest.approx(-1.0)
    z = np.zeros(3, np.int64)
    from movingtarget.arena import EventLog

    log = EventLog(
        t=np.arange(3),
        round=z,
        client=z,
        adversary=z,
        source=z,
        noisy=z,
        y_true=z,
        target=z - 1,
        answer=np.array([-1, -1, 0]),
        reason=np.array([2, 3, 1], np.uint8),
        adversaries=["a"],
    )
    assert first_detection(log) == 2  # a low-confidence refusal is no detection


def test_the_runner_reports_trajectory_features() -> None:
    from movingtarget.experiment import load_config, run_experiment

    cfg = load_config("synthetic", overrides=["seeds=1", "arena.queries=200"])
    results = run_experiment(cfg, workers=1)
    run = results.runs[0]
    assert {"duplicate_share", "step_cosine", "step_l2", "first_detection"} <= set(run)
    assert 0.0 <= run["duplicate_share"] <= 1.0


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("hopskipjump", {**HSJ, "target": 3}),
        ("simba", {"max_iter": 50}),
        ("simba", {"max_iter": 50, "target": 3}),
        ("boundary", {"max_iter": 5, "num_trial": 5, "init_size": 10}),
    ],
)
def test_every_registered_query_attack_runs_in_the_arena(digits, name: str, params: Any) -> None:  # type: ignore[no-untyped-def]
    pools = digits[2]
    adv = build_adversary(name, pools.attacker_x, pools.attacker_y, 10, seed=0, **params)
    log = Arena(ArenaConfig(queries=300, benign_ratio=0.1)).run(
        _defense(digits, "near-repeat-abstain"), [adv], pools.benign_x, pools.benign_y, seed=0
    )
    assert int((log.adversary == 0).sum()) == 300
    assert (log.target[log.adversary == 0] == params.get("target", -1)).all()
    assert adv.sent > 0 and not adv.alive


@pytest.mark.parametrize("target", [None, 3])
def test_hopskipjump_is_reproducible_query_for_query(digits, target: int | None) -> None:  # type: ignore[no-untyped-def]
    """ART draws HopSkipJump's start from a generator it never seeds; the adapter's own
    seeded start makes two runs with one seed ask exactly the same inputs, and another
    seed ask others."""
    _, _, pools = digits

    def run(seed: int) -> Any:
        adv = build_adversary(
            "hopskipjump", pools.attacker_x, pools.attacker_y, 10, seed=seed, target=target, **HSJ
        )
        return _alone(digits, adv, 300)

    a, b, c = run(0), run(0), run(1)
    assert a.x is not None and b.x is not None and c.x is not None
    assert np.array_equal(a.x, b.x) and np.array_equal(a.answer, b.answer)
    assert not np.array_equal(a.x, c.x)
    assert (a.noisy == 1).mean() > 0.9  # it did attack: perturbed copies of its sources
