"""Access that tightens with suspicion (``defenses/suspicion.py``): the rules one query
at a time, the calibration, HopSkipJump stopped in the arena, benign users left alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from movingtarget.answers import ABSTAIN, Reason
from movingtarget.arena import Arena, ArenaConfig
from movingtarget.arena.transforms import NearDuplicates
from movingtarget.attacks import build_adversary
from movingtarget.datasets import load_dataset
from movingtarget.defenses import Argmax, Defense, Memorize, Suspicion, build_defense
from movingtarget.defenses.near_repeat import calibrate_defense
from movingtarget.errors import ConfigError
from movingtarget.experiment.runner import make_pools
from movingtarget.models import build_model


class Fixed:
    """Always class 1 (the rules under test do not depend on the model)."""

    n_classes = 2

    def predict_proba(self, x: Any) -> Any:
        return np.tile([0.2, 0.8], (len(x), 1))


def _defense(**kw: Any) -> tuple[Defense, Suspicion]:
    s = Suspicion(**kw)
    return Defense(Fixed(), [Memorize(on_repeat="abstain"), Argmax(), s]), s


def test_flags_throttle_then_suspend_one_query_after_the_other() -> None:
    # a client sends one input three times (two flagged repeats: score 2 with decay 1),
    # so it is throttled (one answer per 3 time units; a refusal counts as flagged),
    # then distinct inputs: one answered, two throttled (score 4), then suspended
    d, s = _defense(throttle_at=2, suspend_at=4, decay=1.0, throttle_every=3)
    x = np.concatenate([np.zeros((3, 3)), np.arange(1, 6)[:, None] * np.ones((5, 3))])
    x = x.astype(np.float32)
    reasons = [d.answer(x[t : t + 1], [7], np.array([t])).reason_labels()[0] for t in range(8)]
    expected = ["model", "repeat", "repeat", "model", "rate-limited", "rate-limited"]
    assert reasons == [*expected, "suspended", "suspended"]
    assert s.suspended == {7: 6}
    # another client is not affected; the same queries in one batch get the same answers
    assert d.answer(np.full((1, 3), 9.0, np.float32), [8], np.array([9])).reasons[0] == 1
    d2, _ = _defense(throttle_at=2, suspend_at=4, decay=1.0, throttle_every=3)
    assert d2.answer(x, np.full(8, 7), np.arange(8)).reason_labels() == reasons
    s.lift(7)
    assert 7 not in s.suspended and s.score(7) == 0.0
    assert d.answer(np.full((1, 3), 20.0, np.float32), [7], np.array([20])).reasons[0] == 1


class OneByOne(Suspicion):
    """The reference: every client scored one query after the other (``_client``)."""

    def _quiet_clients(self, ids: list[int], *args: Any) -> list[int]:
        return list(range(len(ids)))


@pytest.mark.parametrize("history", [1, 8])
def test_all_clients_at_once_answers_as_one_client_after_the_other(history: int) -> None:
    # many clients in mixed batches: benign ones (distinct inputs), walkers (small steps,
    # throttled, then suspended), repeaters (flagged), one client in a long run; the
    # batched path must give the reference's answers, scores and suspensions exactly
    rng = np.random.default_rng(3)
    kw: dict[str, Any] = dict(throttle_at=2.5, suspend_at=5, step=0.3, history=history)
    fast, ref = Suspicion(**kw), OneByOne(**kw)
    d_fast = Defense(Fixed(), [Memorize(on_repeat="abstain"), Argmax(), fast])
    d_ref = Defense(Fixed(), [Memorize(on_repeat="abstain"), Argmax(), ref])
    walk = {c: rng.random(6).astype(np.float32) for c in range(40, 50)}
    clock = 0
    for batch in range(12):
        n = 200 if batch != 5 else 300
        clients = rng.integers(0, 60, n)
        if batch == 5:
            clients[:150] = 99  # one client's run longer than the step-by-step limit
        x = rng.random((n, 6)).astype(np.float32) * 10
        for j, c in enumerate(clients.tolist()):
            if c in walk:  # a walker: each query a small step from its last
                walk[c] = walk[c] + rng.normal(0, 0.05, 6).astype(np.float32)
                x[j] = walk[c]
            elif c >= 55:  # a repeater: one of three inputs
                x[j] = np.float32(c % 3)
        times = np.arange(clock, clock + n)
        clock += n
        a, b = d_fast.answer(x, clients, times), d_ref.answer(x, clients, times)
        assert a.reason_labels() == b.reason_labels(), batch
        assert np.array_equal(a.labels, b.labels)
    assert fast.suspended == ref.suspended and len(fast.suspended) >= 5
    for c in range(100):
        assert fast.score(c) == pytest.approx(ref.score(c), rel=1e-9, abs=1e-12)


def test_small_steps_count_and_the_step_is_calibrated_on_benign_pairs() -> None:
    rng = np.random.default_rng(0)
    benign = rng.random((500, 16)).astype(np.float32)
    d, s = _defense(throttle_at=3, suspend_at=3, decay=1.0, step_quantile=0.01)
    cal = s.calibrate(benign, benign[::-1].copy(), seed=0)
    pairs = np.linalg.norm(benign[:, None] - benign[None], axis=2)[np.triu_indices(500, 1)]
    assert s.step == pytest.approx(np.quantile(pairs, 0.01), rel=0.1)
    assert cal.calibration_rate == pytest.approx(0.01, abs=0.003)
    # a walk of tiny steps (never an exact repeat): suspended after three of them
    walk = benign[0] + np.arange(6)[:, None] * 1e-3 * np.ones(16, np.float32)
    a = d.answer(walk.astype(np.float32), np.zeros(6, np.int64), np.arange(6))
    assert a.reason_labels() == ["model"] * 4 + ["suspended"] * 2
    # the same inputs from six clients are six first steps: nothing
    d.reset()
    a = d.answer(walk.astype(np.float32), np.arange(6), np.arange(6))
    assert (a.reasons == int(Reason.MODEL)).all()


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"suspend_at": 0}, "suspend_at"),
        ({"throttle_at": 5, "suspend_at": 4}, "throttle_at"),
        ({"decay": 1.5}, "decay"),
        ({"throttle_every": 0}, "throttle_every"),
        ({"flags": ["repeat", "nonsense"]}, "flags"),
        ({"history": 0}, "history"),
        ({"step": -1.0}, "step"),
    ],
)
def test_bad_settings_name_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"suspicion: .*{field}"):
        Suspicion(**kw)


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    split = load_dataset("digits").split(test_size=0.5, seed=0)
    model = build_model("logistic", split, seed=0, cache_dir=None)
    return split, model, make_pools(split.x_test, split.y_test, "split", 0)


HSJ = {"max_iter": 5, "max_eval": 100, "init_eval": 10}


def _hopskipjump(digits: Any, defense: str, seed: int) -> tuple[Any, Any]:
    split, model, pools = digits
    d = build_defense(defense, model, seed=seed)
    calibrate_defense(d, split.x_train, pools.benign_x, seed=seed)
    adv = build_adversary("hopskipjump", pools.attacker_x, pools.attacker_y, 10, seed=seed, **HSJ)
    cfg = ArenaConfig(queries=400, benign_ratio=1.0, near_duplicate_share=0.1)
    log = Arena(cfg).run(d, [adv], pools.benign_x, pools.benign_y, seed=seed, inputs=True)
    return log, pools


def _fooled_within(log: Any, pools: Any, bound: float) -> tuple[int, int]:
    """Source inputs fooled by a query within L2 ``bound`` of them, of those attacked."""
    mine = log.adversary == 0
    wins = (log.answer[mine] != ABSTAIN) & (log.answer[mine] != log.y_true[mine])
    src = log.source[mine]
    flat = pools.attacker_x.reshape(len(pools.attacker_x), -1)
    l2 = np.linalg.norm(log.x[mine].reshape(int(mine.sum()), -1) - flat[src], axis=1)
    return len(set(src[wins & (l2 <= bound)].tolist())), len(set(src.tolist()))


def test_suspicion_stops_hopskipjump_against_near_repeat_memory(digits) -> None:  # type: ignore[no-untyped-def]
    """Against near-repeat memory alone HopSkipJump fools, within the median perturbation
    it reaches there, half the inputs it fools at all (tens of inputs in 400 queries);
    with suspicion the client is suspended within 30 queries and fools at most one input
    that closely, while no benign client (near-duplicate senders included) is suspended."""
    for seed in range(3):
        plain, pools = _hopskipjump(digits, "near-repeat-abstain", seed)
        mine = plain.adversary == 0
        wins = (plain.answer[mine] != ABSTAIN) & (plain.answer[mine] != plain.y_true[mine])
        src = plain.source[mine]
        flat = pools.attacker_x.reshape(len(pools.attacker_x), -1)
        l2 = np.linalg.norm(plain.x[mine].reshape(int(mine.sum()), -1) - flat[src], axis=1)
        best = [l2[wins & (src == s)].min() for s in sorted(set(src[wins].tolist()))]
        bound = float(np.median(best))  # what the attack reaches against the memory alone
        held, _ = _hopskipjump(digits, "near-repeat-suspicion", seed)
        k0, _ = _fooled_within(plain, pools, bound)
        k1, _ = _fooled_within(held, pools, bound)
        assert k0 >= 10 and k1 <= 1, (seed, bound, k0, k1)
        sus = held.reason == int(Reason.SUSPENDED)
        assert sus[held.adversary == 0].any()
        first = int(np.argmax(sus[held.adversary == 0])) + 1
        assert first <= 30, first
        assert not (sus & (held.adversary < 0)).any()  # no benign client suspended
        assert not (plain.reason == int(Reason.SUSPENDED)).any()


def test_benign_clients_with_near_duplicates_are_not_suspended() -> None:
    """1,000 benign clients, ten Fashion-MNIST images each (every test image once) and,
    one query in ten, a re-encoded copy of one of their own earlier images, against
    near-repeat memory with suspicion: at most 0.1 % of them (one) suspended."""
    train = load_dataset("fashion-mnist", part="train", limit=3000).split(test_size=0.5, seed=0)
    model = build_model("logistic", train, seed=0, cache_dir=None)
    test = load_dataset("fashion-mnist", part="test")
    x = np.asarray(test.x, np.float32)[:10000]
    d = build_defense("near-repeat-suspicion", model, seed=0)
    calibrate_defense(d, train.x_train, train.x_test, seed=0)
    suspicion = d.mechanisms[-1]
    assert isinstance(suspicion, Suspicion) and suspicion.step is not None
    rng = np.random.default_rng(0)
    transforms = NearDuplicates(["requantize", "brightness"], lo=0.0, hi=1.0)
    clients = np.repeat(np.arange(1, 1001), 10)
    rng.shuffle(clients)
    sent: dict[int, list[int]] = {}
    rows, near = [], []
    for i, c in enumerate(clients.tolist()):
        own = sent.setdefault(c, [])
        if own and rng.random() < 0.1:
            rows.append(transforms.apply(x[rng.choice(own)][None], rng)[0])
            near.append(True)
        else:
            rows.append(x[i])
            near.append(False)
        own.append(i)
    queries = np.stack(rows).astype(np.float32)
    reasons = []
    for lo in range(0, len(queries), 64):
        a = d.answer(
            queries[lo : lo + 64],
            clients[lo : lo + 64],
            np.arange(lo, lo + 64)[: len(queries[lo : lo + 64])],
        )
        reasons.append(a.reasons)
    all_reasons = np.concatenate(reasons)
    assert sum(near) > 500  # the near-duplicates were sent
    assert len(suspicion.suspended) <= 1, len(suspicion.suspended)
    assert (all_reasons == int(Reason.SUSPENDED)).sum() <= 10
