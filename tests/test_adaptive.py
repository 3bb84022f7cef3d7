"""The adaptive attacker (issue 15, item 4): it learns a near-repeat memory's match
threshold from its refusals, spreads its queries over accounts against per-client rate
limits, and hides them among clean queries; runs report what that cost (bad queries,
accounts burnt).

Figures: ``pytest -q -s tests/test_adaptive.py`` prints each measurement.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from movingtarget import ConfigError
from movingtarget.answers import ABSTAIN
from movingtarget.arena import Arena, ArenaConfig, EventLog, adversary_client
from movingtarget.attacks import ATTACKS, AdaptiveAttack, TestSetAttack, build_adversary
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense
from movingtarget.defenses.near_repeat import split_unseen
from movingtarget.experiment.runner import (
    CALIBRATION_SIZE,
    Pools,
    Prepared,
    calibrate_task,
    make_pools,
)
from movingtarget.metrics.measured import AttackMetrics, attack_metrics
from movingtarget.models import build_model

SEEDS = range(10)
#: A per-client rate limit that stops one client after 50 answers per 1000 arrivals.
RATE_LIMITED = (
    "rate-limit(max_queries=50, window=1000) > memorize(on_repeat=abstain) > "
    "near-repeat(on_repeat=abstain) > argmax"
)


@pytest.fixture(scope="module")
def deployed() -> tuple[Prepared, float]:
    """Logistic regression on digits, disjoint attacker and benign pools, prepared as the
    runner prepares a split (calibration inputs, unseen halves), and ``r`` on the
    attacker's pool."""
    split = load_dataset("digits").split(test_size=0.5, seed=0)
    model = build_model("logistic", split, seed=0, cache_dir=None)
    pools = make_pools(split.x_test, split.y_test, "split", 0)
    unseen = split_unseen(pools.benign_x, [0, 0x5EE], CALIBRATION_SIZE)
    prepared = Prepared(model, pools, split.x_train, {}, unseen)
    wrong = model.predict_proba(pools.attacker_x).argmax(axis=1) != pools.attacker_y
    return prepared, float(wrong.mean())


def deploy(
    deployed: tuple[Prepared, float],
    attack: str,
    defense: str,
    seed: int,
    queries: int,
    **params: Any,
) -> tuple[Any, AttackMetrics, EventLog]:
    """One deployment, the defense calibrated as the runner calibrates it."""
    prepared, _ = deployed
    pools: Pools = prepared.pools
    d = build_defense(defense, prepared.model, seed=seed)
    calibrate_task(d, prepared, seed)
    a = build_adversary(
        attack, pools.attacker_x, pools.attacker_y, d.n_classes, seed=seed, **params
    )
    log = Arena(ArenaConfig(queries=queries, benign_ratio=0.1)).run(
        d, [a], pools.benign_x, pools.benign_y, seed=seed
    )
    return a, attack_metrics(log), log


def mean_se(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), float(arr.std(ddof=1) / np.sqrt(len(arr)))


def show(values: list[float]) -> str:
    """``mean ± s.e.`` of ``values``, for the printed figures."""
    mean, se = mean_se(values)
    return f"{mean:.3f} ± {se:.3f}"


def apart(a: list[float], b: list[float]) -> tuple[float, float]:
    """The difference of the means of ``a`` and ``b`` and its standard error."""
    (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
    return ma - mb, float(np.hypot(sa, sb))


# -- threshold probing -----------------------------------------------------------------

NOISY_EPS = 4 / 255  # the noise the near-repeat tests hold noisy-repeat to 2r with


def test_adaptive_beats_noisy_repeat_against_near_repeat_memory(deployed) -> None:  # type: ignore[no-untyped-def]
    """Against calibrated near-repeat memorization, noisy repeats of fixed small noise
    are caught and the attacker is held near r; the adaptive attacker learns how far the
    memory reaches and stays outside it: r~ far higher, and far fewer refused queries
    per success."""
    _, r = deployed
    got: dict[str, dict[str, list[float]]] = {}
    thresholds: list[float] = []
    searched: list[float] = []
    for name, params in (("noisy-repeat", {"eps": NOISY_EPS}), ("adaptive", {})):
        runs = [deploy(deployed, name, "near-repeat-abstain", s, 1000, **params) for s in SEEDS]
        got[name] = {
            "r_tilde": [m.r_tilde for _, m, _ in runs],
            "bad": [m.bad_queries_per_success for _, m, _ in runs],
        }
        if name == "adaptive":
            thresholds = [a.threshold for a, _, _ in runs]
            searched = [a.searched for a, _, _ in runs]
    for name, vals in got.items():
        print(
            f"\n{name}: r = {r:.3f}, r~ = %.3f ± %.3f, bad queries per success = %.3f ± %.3f"
            % (*mean_se(vals["r_tilde"]), *mean_se(vals["bad"]))
        )
    print(f"searched thresholds (L-inf noise): {np.round(searched, 3).tolist()}")
    print(f"thresholds at the end: {np.round(thresholds, 3).tolist()}")
    # the memory holds the non-adaptive attacker (the defense works at all)
    assert mean_se(got["noisy-repeat"]["r_tilde"])[0] <= 2 * r
    # the binary search alone (before any catch raised it) lands above the noise the
    # memory catches, below where it started
    assert min(searched) > NOISY_EPS and max(searched) < 0.5
    diff, se = apart(got["adaptive"]["r_tilde"], got["noisy-repeat"]["r_tilde"])
    assert diff > 3 * se and diff > 0
    fewer, se_bad = apart(got["noisy-repeat"]["bad"], got["adaptive"]["bad"])
    assert fewer > 3 * se_bad and fewer > 0


# -- accounts --------------------------------------------------------------------------

ACCOUNTS = 20


def test_many_accounts_beat_a_per_client_rate_limit(deployed) -> None:  # type: ignore[no-untyped-def]
    """A per-client rate limit (50 answers per 1000 arrivals) in front of near-repeat
    memory stops the adaptive attacker on one account; on 20 accounts each stays under
    the limit, and r~ returns to what the memory alone allows."""
    got: dict[int, list[AttackMetrics]] = {}
    for k in (1, ACCOUNTS):
        got[k] = [deploy(deployed, "adaptive", RATE_LIMITED, s, 2000, accounts=k)[1] for s in SEEDS]
        print(
            f"\naccounts={k}: r~ = %.3f ± %.3f, refused = %.3f, bad queries per success = %.2f, "
            "accounts used %.1f, burnt %.1f"
            % (
                *mean_se([m.r_tilde for m in got[k]]),
                np.mean([m.abstain_adversarial for m in got[k]]),
                np.nanmean([m.bad_queries_per_success for m in got[k]]),
                np.mean([m.accounts_used for m in got[k]]),
                np.mean([m.accounts_burnt for m in got[k]]),
            )
        )
    one, many = got[1], got[ACCOUNTS]
    # one account: at most 50 answers per window of 1000 arrivals (2200 arrivals here)
    assert all(m.queries - m.bad_queries <= 3 * 50 for m in one)
    assert all(m.accounts_used == 1 and m.accounts_burnt == 1 for m in one)
    assert all(m.accounts_used == ACCOUNTS for m in many)
    diff, se = apart([m.r_tilde for m in many], [m.r_tilde for m in one])
    assert diff > 3 * se and diff > 0


# -- the contract: accounts in the arena ---------------------------------------------


class Wrong:
    """Answers class 1 for everything."""

    n_classes = 2

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile([0.0, 1.0], (len(x), 1))


def small_pool(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).random((n, 8), dtype=np.float32)
    return x, np.zeros(n, np.int64)  # every item is a mistake of Wrong


def test_arena_gives_each_account_its_own_client_id() -> None:
    """Account k of adversary i is its own client id in the log; an adversary that
    names no accounts keeps the one id it always had."""
    x, y = small_pool()
    adaptive = AdaptiveAttack(x, y, 2, seed=0, accounts=3)
    plain = TestSetAttack(x, y, 2, seed=0)
    log = Arena(ArenaConfig(queries=30, benign_ratio=0.5)).run(
        build_defense("deterministic", Wrong()), [adaptive, plain], x, y, seed=0
    )
    first = log.client[log.adversary == 0]
    assert sorted(set(first.tolist())) == [adversary_client(0, k) for k in range(3)]
    assert set(log.client[log.adversary == 1].tolist()) == {adversary_client(1)}
    assert (log.client[log.adversary < 0] <= 100).all()
    assert attack_metrics(log, 0).accounts_used == 3
    # alone (the arena's fast path) too
    log = Arena(ArenaConfig(queries=30, benign_ratio=0)).run(
        build_defense("deterministic", Wrong()), [AdaptiveAttack(x, y, 2, accounts=2)], x, y
    )
    assert sorted(set(log.client.tolist())) == [adversary_client(0, k) for k in range(2)]


def test_arena_refuses_a_bad_account_column() -> None:
    x, y = small_pool()

    class Negative(TestSetAttack):
        def propose(self, limit: int, exactly: bool = False):  # type: ignore[no-untyped-def]
            p = super().propose(limit, exactly)
            p.account = np.full(len(p), -1, np.int64)
            return p

    with pytest.raises(RuntimeError, match="account"):
        Arena(ArenaConfig(queries=5, benign_ratio=0)).run(
            build_defense("deterministic", Wrong()), [Negative(x, y, 2)], x, y
        )


def test_bad_queries_and_burnt_accounts_are_counted() -> None:
    """A refusal (ABSTAIN, whatever the reason) is a bad query and burns the account
    that sent it; an account never refused is used, not burnt."""
    clients = np.array([5, 5, 6, 7, 7, 9])
    answer = np.array([1, ABSTAIN, 1, 0, ABSTAIN, ABSTAIN])
    z = np.zeros(6, np.int64)
    owner = np.array([0, 0, 0, 0, 0, -1])
    log = EventLog(t=np.arange(6), round=z, client=clients, adversary=owner, source=z,
                   noisy=z, y_true=z, target=z - 1, answer=answer,
                   reason=np.zeros(6, np.uint8), adversaries=["adaptive"])  # fmt: skip
    m = attack_metrics(log)
    assert (m.bad_queries, m.accounts_used, m.accounts_burnt) == (2, 3, 2)
    assert m.bad_queries_per_success == 1.0  # 2 refused, 2 wrong answers
    assert np.isnan(
        attack_metrics(log.select(np.array([0, 0, 0, 1, 0, 0], bool))).bad_queries_per_success
    )


# -- cover -----------------------------------------------------------------------------


def test_cover_hides_each_attack_query_among_clean_ones() -> None:
    """With cover c, each probe or exploit query sits at a random place among c clean
    pool items, each sent once, none of them the item attacked."""
    x, y = small_pool(400)
    a = AdaptiveAttack(x, y, 2, seed=0, cover=3, accounts=2)
    p = a.propose(100)
    a.observe(np.ones(len(p), np.int64))  # a mistake: probing begins
    item = int(p.source[0])
    places, cover_items = [], []
    for _ in range(12):
        p = a.propose(100)
        assert len(p) % 4 == 0
        attack = p.noisy & (p.source == item)
        assert attack.sum() == len(p) // 4
        places += (np.flatnonzero(attack) % 4).tolist()
        cover = ~attack
        assert not p.noisy[cover].any()  # clean items, sent as they are
        np.testing.assert_array_equal(p.x[cover], x[p.source[cover]])
        cover_items += p.source[cover].tolist()
        a.observe(np.ones(len(p), np.int64))
    assert item not in cover_items and len(set(cover_items)) == len(cover_items)
    assert len(set(places)) > 1  # not always in the same place
    # no cover: every query is a copy
    a = AdaptiveAttack(x, y, 2, seed=0)
    a.propose(1)
    a.observe(np.ones(1, np.int64))
    assert a.propose(100).noisy.all()


# -- parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params,field",
    [
        ({"accounts": 0}, "accounts"),
        ({"accounts": -2}, "accounts"),
        ({"accounts": 1.5}, "accounts"),
        ({"cover": -1}, "cover"),
        ({"probes": 0}, "probes"),
        ({"eps_low": 0.5, "eps_high": 0.1}, "eps_low"),
        ({"margin": 1.0}, "margin"),
        ({"norm": "l3"}, "norm"),
    ],
)
def test_bad_parameters_name_the_field(params: dict[str, Any], field: str) -> None:
    x, y = small_pool()
    with pytest.raises(ConfigError, match=f"adaptive: {field}") as info:
        build_adversary("adaptive", x, y, 2, **params)
    assert "\n" not in str(info.value)


def test_registered() -> None:
    assert ATTACKS.get("adaptive") is AdaptiveAttack


def test_covered_attack_still_beats_noisy_repeat(deployed) -> None:  # type: ignore[no-untyped-def]
    """With cover 2, a third of the attacker's queries are copies of its mistake (the
    rest clean pool items, as a benign client sends): r~ falls, and it still beats the
    non-adaptive attacker by far."""
    covered = [deploy(deployed, "adaptive", "near-repeat-abstain", s, 1000, cover=2) for s in SEEDS]
    noisy = [
        deploy(deployed, "noisy-repeat", "near-repeat-abstain", s, 1000, eps=NOISY_EPS)[1]
        for s in SEEDS
    ]
    shares = [a.copies_sent / m.queries for a, m, _ in covered]
    print(
        f"\nadaptive cover=2: r~ = {show([m.r_tilde for _, m, _ in covered])}, bad queries "
        f"per success = {show([m.bad_queries_per_success for _, m, _ in covered])}, share of "
        f"copies {np.mean(shares):.3f}"
    )
    # one copy per three queries, but for the exploration (clean queries too)
    assert all(0.25 < share <= 1 / 3 for share in shares)
    diff, se = apart([m.r_tilde for _, m, _ in covered], [m.r_tilde for m in noisy])
    assert diff > 3 * se and diff > 0
