"""Continual refresh and the white-fading experiment: refreshes fire only on their
schedule, a refresh that would drop canary accuracy is rolled back and recorded, bad
settings are one clear line, and the white-box attacker's success decays faster at a
higher refresh rate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from movingtarget import ConfigError
from movingtarget.datasets import load_dataset
from movingtarget.defenses import Refresh, build_defense, supply_defense
from movingtarget.experiment.fading import FadingConfig, decay_difference, run_fading
from movingtarget.models import ModelPool, build_model
from movingtarget.report.fading import write_fading_report

SPLIT = load_dataset("digits").split(test_size=0.5, seed=0)
#: canary: the first half of the test split (held out from training)
CANARY = (SPLIT.x_test[:400], SPLIT.y_test[:400])
QUERIES = SPLIT.x_test[400:]


def refreshing(every: int, tmp_path: Path, members: int = 3, **params: object):
    pool = build_model("pool", SPLIT, seed=0, members=members, cache_dir=tmp_path)
    args = "".join(f", {k}={v}" for k, v in params.items())
    defense = build_defense(
        f"refresh(every={every}{args}) > moving-target(abstain_on=none)", pool, seed=1
    )
    assert supply_defense(defense, SPLIT, *CANARY) == 1
    assert isinstance(defense.mechanisms[0], Refresh)
    return defense, pool, defense.mechanisms[0]


def ask(defense, times) -> None:
    times = np.asarray(times, np.int64)
    defense.answer(QUERIES[np.arange(len(times)) % len(QUERIES)], times=times)


# -- the schedule -------------------------------------------------------------------------


def test_refresh_never_fires_before_its_time(tmp_path: Path) -> None:
    defense, pool, refresh = refreshing(100, tmp_path)
    deployed = list(pool.members)
    ask(defense, np.arange(0, 100))  # times 0..99: the first refresh is due at 100
    assert refresh.records == []
    assert all(a is b for a, b in zip(pool.members, deployed, strict=True))
    ask(defense, [100])  # on time: one refresh, member 0 first
    assert [(r.time, r.member) for r in refresh.records] == [(100, 0)]
    assert pool.members[0] is not deployed[0] and pool.members[1] is deployed[1]
    ask(defense, np.arange(101, 200))
    assert len(refresh.records) == 1


def test_a_straddling_batch_is_answered_before_and_after_the_refresh(tmp_path: Path) -> None:
    defense, pool, refresh = refreshing(100, tmp_path)
    old = pool.members[0]
    seen: list[tuple[int, bool]] = []  # (first time of each part, member 0 still the old)

    class Spy:
        role = "gate"

        def __call__(self, ctx) -> None:
            seen.append((int(ctx.times[0]), pool.members[0] is old))

        def reset(self) -> None: ...

        def describe(self) -> str:
            return "spy"

    defense.mechanisms.insert(1, Spy())
    ask(defense, np.arange(90, 320))  # crosses 100, 200 and 300 in one batch
    assert [r.time for r in refresh.records] == [100, 200, 300]
    assert seen == [(90, True), (100, False), (200, False), (300, False)]


def test_a_gateways_clock_starts_the_schedule_and_a_gap_refreshes_once(tmp_path: Path) -> None:
    # a gateway's times are milliseconds since the epoch: the schedule starts at the
    # first arrival (no catching up from time 0), and a quiet spell of many periods
    # ends in one refresh, not one per period
    defense, _, refresh = refreshing(1000, tmp_path)
    now = 1_760_000_000_000
    ask(defense, now + np.arange(50))
    assert refresh.records == []
    ask(defense, np.full(10, now + 1000))
    assert [r.time for r in refresh.records] == [now + 1000]
    ask(defense, np.full(10, now + 25_500))  # 24 periods later
    assert [r.time for r in refresh.records] == [now + 1000, now + 2000]
    ask(defense, np.full(10, now + 25_900))  # the schedule now runs from the gap
    assert len(refresh.records) == 2
    ask(defense, np.full(10, now + 26_000))
    assert [r.time for r in refresh.records][-1] == now + 26_000


def test_a_defense_without_refresh_never_changes_its_pool(tmp_path: Path) -> None:
    pool = build_model("pool", SPLIT, seed=0, members=3, cache_dir=tmp_path)
    deployed = list(pool.members)
    defense = build_defense("moving-target(abstain_on=none)", pool, seed=1)
    ask(defense, np.arange(5000))
    assert all(a is b for a, b in zip(pool.members, deployed, strict=True))


def test_reset_puts_the_deployed_members_back(tmp_path: Path) -> None:
    defense, pool, refresh = refreshing(10, tmp_path)
    deployed = list(pool.members)
    ask(defense, np.arange(0, 31))
    assert sum(r.accepted for r in refresh.records) >= 1
    assert any(a is not b for a, b in zip(pool.members, deployed, strict=True))
    defense.reset()
    assert all(a is b for a, b in zip(pool.members, deployed, strict=True))
    ask(defense, np.arange(0, 10))  # the schedule starts again from time 0
    assert len(refresh.records) == 3


# -- the canary gate ------------------------------------------------------------------------


def test_a_refresh_that_drops_canary_accuracy_is_rolled_back_and_recorded(
    tmp_path: Path,
) -> None:
    defense, pool, refresh = refreshing(50, tmp_path, tolerance=0.01)
    deployed = list(pool.members)
    before = pool.predict_proba(CANARY[0])
    # a poisoning labeler: every training input with a wrong class
    wrong = (SPLIT.y_train + 1) % SPLIT.n_classes
    assert defense.learn(SPLIT.x_train, wrong) == len(wrong)
    ask(defense, np.arange(0, 51))
    (record,) = refresh.records
    assert not record.accepted
    assert record.labels == len(wrong)
    assert record.drop > 0.01  # it would have cost more than the tolerance
    assert all(a is b for a, b in zip(pool.members, deployed, strict=True))
    assert np.array_equal(pool.predict_proba(CANARY[0]), before)  # the pool as it was


def test_honest_labels_are_kept(tmp_path: Path) -> None:
    defense, pool, refresh = refreshing(50, tmp_path, tolerance=0.01)
    deployed = list(pool.members)
    defense.learn(SPLIT.x_train[:200], SPLIT.y_train[:200])
    ask(defense, np.arange(0, 51))
    (record,) = refresh.records
    assert record.accepted and record.labels == 200
    assert record.drop <= 0.01
    assert pool.members[0] is not deployed[0]


# -- bad settings: one clear line naming the field -------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("refresh(every=0) > moving-target", "refresh: every must be an integer >= 1, got 0"),
        ("refresh(every=1.5) > moving-target", "refresh: every must be an integer >= 1"),
        ("refresh(replace=4) > moving-target", "refresh: replace (4) must be at most the pool's 3"),
        ("refresh(tolerance=2) > moving-target", "refresh: tolerance must be in [0, 1], got 2"),
        ("refresh(ask_on=bogus) > moving-target", "refresh: ask_on: unknown reason 'bogus'"),
        ("refresh(max_labels=-1) > moving-target", "refresh: max_labels must be an integer >= 0"),
        ("refresh(often=3) > moving-target", "often"),
    ],
)
def test_bad_refresh_parameters_name_the_field(spec: str, message: str, tmp_path: Path) -> None:
    pool = build_model("pool", SPLIT, seed=0, members=3, cache_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        build_defense(spec, pool)
    assert message in str(err.value)


def test_refresh_needs_a_pool_with_a_recipe(tmp_path: Path) -> None:
    logistic = build_model("logistic", SPLIT, seed=0, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="needs a pool model"):
        build_defense("refresh(every=5) > argmax", logistic)
    handmade = ModelPool([logistic, logistic])
    with pytest.raises(ConfigError, match="refresh needs a pool built as model 'pool'"):
        build_defense("refresh(every=5) > moving-target", handmade)


def test_a_refresh_without_data_says_so(tmp_path: Path) -> None:
    pool = build_model("pool", SPLIT, seed=0, members=3, cache_dir=tmp_path)
    defense = build_defense("refresh(every=5) > moving-target", pool)
    with pytest.raises(ConfigError, match="refresh: no training data or canary set"):
        ask(defense, np.arange(10))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("members", (1,), "fading: members must be integers >= 2, got [1]"),
        ("every", (0, -5), "fading: every must be integers >= 0, got [0, -5]"),
        ("every", (100, 100), "fading: every must not repeat a value"),
        ("queries", 0, "fading: queries must be an integer >= 1, got 0"),
        ("window", 7, "fading: window (7) must divide queries (1200)"),
        ("window", 1200, "fading: queries (1200) must hold at least two windows"),
        ("seeds", True, "fading: seeds must be an integer >= 1"),
        ("tolerance", 1.5, "fading: tolerance must be a number in [0, 1], got 1.5"),
        ("agreement", 0, "fading: agreement must be a number in (0, 1], got 0"),
    ],
)
def test_bad_fading_settings_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        FadingConfig(**{field: value})  # type: ignore[arg-type]
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--every", "-1"], "every"),
        (["--members", "1"], "members"),
        (["--window", "7"], "window"),
        (["--seeds", "0"], "seeds"),
        (["--every", "ten"], "--every"),
    ],
)
def test_bad_fading_flags_are_one_line(flags: list[str], names: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "movingtarget", "fading", "--out", str(tmp_path / "f"), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert names in proc.stderr
    if not flags[-1].isalpha():  # ours (Typer frames its own usage errors in a box)
        assert len(lines) == 1, proc.stderr


# -- white fading to black box ----------------------------------------------------------------


@pytest.mark.slow
def test_attack_success_decays_faster_at_a_higher_refresh_rate(tmp_path: Path) -> None:
    # 3 seeds x (never, every 300, every 50) x 600 adversarial queries, pools of 5
    cfg = FadingConfig(members=(5,), every=(0, 300, 50), queries=600, window=150, seeds=3)
    result = run_fading(cfg, cache_dir=str(tmp_path / "cache"))
    # paired by seed (the same pool for every interval), s.e. floored at the binomial one
    diff, se = decay_difference(result, 5, faster=50, slower=300)
    assert diff > 3 * se, (diff, se, result.rows())
    diff0, se0 = decay_difference(result, 5, faster=300, slower=0)
    assert diff0 > 3 * se0, (diff0, se0, result.rows())
    rows = {r["every"]: r for r in result.rows()}
    # the refreshes keep natural accuracy: the gate held, and benign users did as well as
    # with the fixed pool, within 3 binomial s.e. of the difference
    n_benign = cfg.seeds * int(cfg.benign_ratio * cfg.queries)
    for every in (300, 50):
        a, b = rows[every]["benign_accuracy"], rows[0]["benign_accuracy"]
        se_acc = np.sqrt((a * (1 - a) + b * (1 - b)) / n_benign)
        assert a > b - 3 * se_acc, (every, a, b)
        last = cfg.queries + int(cfg.benign_ratio * cfg.queries) - 1  # the last arrival
        assert rows[every]["refreshes"] == cfg.seeds * (last // every)
    path = write_fading_report(result, tmp_path)
    text = path.read_text()
    assert text.count("\n| 5 |") == 3 and "every 50" in text
    assert (tmp_path / "fading.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
