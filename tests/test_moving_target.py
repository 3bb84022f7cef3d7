"""The moving target: the secret schedule, abstention where members disagree, bad
parameters, and the test set attack against it in the arena."""

from __future__ import annotations

import numpy as np
import pytest

from movingtarget import ABSTAIN, ConfigError, Reason
from movingtarget.arena import Arena, ArenaConfig
from movingtarget.attacks import build_adversary
from movingtarget.datasets import load_dataset
from movingtarget.defenses import COMPOSITIONS, Defense, MovingTarget, build_defense
from movingtarget.metrics import attack_metrics
from movingtarget.models import ModelPool, build_model

#: VOTES[kind][member]: the class member i gives an input whose first feature is ``kind``
VOTES = np.array(
    [
        [0, 0, 0, 0, 0],  # unanimous
        [1, 1, 1, 1, 2],  # 4 of 5
        [2, 2, 2, 0, 0],  # 3 of 5
        [0, 1, 2, 0, 1],  # no majority
    ]
)


class Voter:
    """Member ``i``: probability 0.8 on VOTES[kind, i], the rest spread evenly."""

    n_classes = 3

    def __init__(self, i: int) -> None:
        self.i = i

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        cls = VOTES[x[:, 0].astype(int), self.i]
        p = np.full((len(x), 3), 0.1)
        p[np.arange(len(x)), cls] = 0.8
        return p


POOL = ModelPool([Voter(i) for i in range(5)], member="voter")


def kinds(values: list[int] | np.ndarray) -> np.ndarray:
    x = np.zeros((len(values), 2), np.float32)
    x[:, 0] = values
    return x


def test_same_secret_same_schedule_different_secret_differs() -> None:
    t = np.arange(2000)
    a = MovingTarget(secret="alpha").choose(t, 5)
    assert (a == MovingTarget(secret="alpha").choose(t, 5)).all()
    assert (a == MovingTarget(secret=b"alpha").choose(t, 5)).all()
    for other in ("beta", 7, b"\x00alpha"):
        b = MovingTarget(secret=other).choose(t, 5)
        assert (a != b).mean() > 0.7  # independent schedules differ on about 4 in 5


def test_default_secret_comes_from_the_defense_seed_and_survives_reset() -> None:
    x = kinds(np.tile([1, 2, 3], 200))

    def served(seed: int, reset: bool = False):
        d = build_defense("moving-target(abstain_on=none)", POOL, seed=seed)
        first = d.answer(x).labels
        if reset:
            d.reset()
            assert (d.answer(x).labels == first).all()  # the same schedule after a reset
        return first

    assert (served(3, reset=True) == served(3)).all()
    assert (served(3) != served(4)).any()


def test_epoch_schedule_keeps_one_member_per_epoch() -> None:
    t = np.arange(5000)
    picks = MovingTarget(schedule="epoch", epoch=50, secret=1).choose(t, 5)
    blocks = picks.reshape(-1, 50)
    assert (blocks == blocks[:, :1]).all()
    assert len(np.unique(blocks[:, 0])) == 5  # 100 epochs reach every member
    # an epoch that starts mid-batch: times, not positions, decide
    shifted = MovingTarget(schedule="epoch", epoch=50, secret=1).choose(t[25:75], 5)
    assert (shifted == picks[25:75]).all()


def test_query_schedule_uses_every_member_at_equal_rates() -> None:
    n, k = 20_000, 5
    counts = np.bincount(MovingTarget(secret=11).choose(np.arange(n), k), minlength=k)
    expected = n / k
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # chi-square with k - 1 = 4 degrees of freedom: P(chi2 > 18.47) = 0.001
    assert chi2 < 18.47, counts
    # and each count within 4 binomial standard errors of n/k
    se = np.sqrt(n * (1 / k) * (1 - 1 / k))
    assert (np.abs(counts - expected) < 4 * se).all(), counts


# REFUSED[kind][member]: whether the rule abstains when that member is drawn
NEVER = [[False] * 5] * 4
UNANIMOUS = [[False] * 5, [True] * 5, [True] * 5, [True] * 5]
MAJORITY = [[False] * 5, [False] * 4 + [True], [False] * 3 + [True] * 2, [True] * 5]
FOUR_OF_FIVE = [[False] * 5, [False] * 4 + [True], [True] * 5, [True] * 5]


@pytest.mark.parametrize(
    ("abstain_on", "agreement", "refused"),
    [
        ("none", 0.6, NEVER),
        ("disagreement", 1.0, UNANIMOUS),
        ("disagreement", 0.6, MAJORITY),
        ("disagreement", 0.8, FOUR_OF_FIVE),
    ],
)
def test_abstains_exactly_where_members_disagree(abstain_on, agreement, refused) -> None:
    x = kinds(np.repeat([0, 1, 2, 3], 250))
    times = np.arange(len(x))
    mech = MovingTarget(secret="k", abstain_on=abstain_on, agreement=agreement)
    a = Defense(POOL, [mech]).answer(x, times=times)
    kind = x[:, 0].astype(int)
    chosen = mech.choose(times, 5)
    served = VOTES[kind, chosen]
    refuse = np.asarray(refused)[kind, chosen]
    assert refuse.any() or abstain_on == "none"
    assert (a.labels[refuse] == ABSTAIN).all()
    assert (a.reasons[refuse] == Reason.DISAGREEMENT).all()
    assert (a.labels[~refuse] == served[~refuse]).all()  # the chosen member's class
    assert (a.reasons[~refuse] == Reason.MODEL).all()
    if abstain_on == "none":
        assert len(np.unique(a.labels[kind == 3])) == 3  # answers move on the split input


def test_margin_rule_reads_the_mean_probabilities() -> None:
    x = kinds(np.repeat([0, 1, 2, 3], 50))
    mean = POOL.predict_proba(x)
    top = np.sort(mean, axis=1)
    gap = top[:, -1] - top[:, -2]
    for margin in (0.1, 0.3, 0.6):
        a = build_defense(f"moving-target(abstain_on=margin, margin={margin})", POOL).answer(x)
        assert ((a.labels == ABSTAIN) == (gap < margin)).all()
        assert (a.reasons[gap < margin] == Reason.DISAGREEMENT).all()
    both = build_defense("moving-target(abstain_on=both, margin=0.3)", POOL, seed=1).answer(x)
    only_d = build_defense("moving-target(abstain_on=disagreement)", POOL, seed=1).answer(x)
    assert ((both.labels == ABSTAIN) == ((only_d.labels == ABSTAIN) | (gap < 0.3))).all()


def test_gates_before_it_keep_their_answers() -> None:
    d = build_defense("memorize(on_repeat=abstain) > moving-target(abstain_on=none)", POOL)
    a = d.answer(kinds([0, 0, 1]))
    assert a.reason_labels() == ["model", "repeat", "model"]
    assert a.labels[0] == 0


def test_describe_and_the_named_composition() -> None:
    assert MovingTarget().describe() == "moving-target"
    assert MovingTarget(secret="s").describe() == "moving-target"  # never the secret
    text = MovingTarget(schedule="epoch", epoch=10, abstain_on="both", margin=0.1).describe()
    assert text == "moving-target(schedule=epoch, epoch=10, abstain_on=both, margin=0.1)"
    assert "moving-target" in COMPOSITIONS["moving-target-abstain"]
    assert build_defense("moving-target-abstain", POOL).name == "moving-target-abstain"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("moving-target(schedule=hourly)", "schedule must be one of query, epoch"),
        ("moving-target(schedule=epoch, epoch=0)", "epoch must be an integer >= 1"),
        ("moving-target(epoch=2.5)", "epoch must be an integer >= 1"),
        ("moving-target(agreement=0)", r"agreement must lie in \(0, 1\]"),
        ("moving-target(agreement=1.5)", r"agreement must lie in \(0, 1\]"),
        ("moving-target(margin=-0.1)", r"margin must lie in \[0, 1\]"),
        ("moving-target(abstain_on=always)", "abstain_on must be one of disagreement"),
        ("moving-target(secret=1.5)", "secret must be bytes, a string or an int"),
        ("moving-target(secret='')", "secret must not be empty"),
    ],
)
def test_bad_parameters(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_defense(text, POOL)


def test_a_model_that_is_not_a_pool_is_refused() -> None:
    split = load_dataset("digits").split(test_size=0.3, seed=0)
    with pytest.raises(ConfigError, match="moving-target needs a pool model"):
        build_defense("moving-target-abstain", build_model("synthetic", split, r=0.05))


def test_test_set_attack_gains_less_against_the_moving_target(tmp_path) -> None:
    """r~ of the test set attack: the moving target (majority agreement) against the
    deterministic argmax of the same pool's mean, 100 seeds of 400 queries."""
    split = load_dataset("digits").split(test_size=0.3, seed=0)
    pool = build_model("pool", split, seed=0, cache_dir=tmp_path)
    config = ArenaConfig(queries=400, benign_ratio=0.25, duplicate_share=0.0)

    def r_tilde(defense: str) -> np.ndarray:
        out = []
        for seed in range(100):
            d = build_defense(defense, pool, seed=seed)
            a = build_adversary("test-set", split.x_test, split.y_test, d.n_classes, seed=seed)
            log = Arena(config).run(d, [a], split.x_test, split.y_test, seed=seed)
            out.append(attack_metrics(log).r_tilde)
        return np.array(out)

    det, moving = r_tilde("deterministic"), r_tilde("moving-target-abstain")
    n = 100 * 400
    r_det, r_mov = det.mean(), moving.mean()
    binomial_se = np.sqrt(r_det * (1 - r_det) / n + r_mov * (1 - r_mov) / n)
    assert r_det - r_mov > 3 * binomial_se, (r_det, r_mov, binomial_se)
    # the seeds' own spread is wider (the first mistake's arrival varies): 3 s.e. too
    seed_se = np.sqrt(det.var(ddof=1) / 100 + moving.var(ddof=1) / 100)
    assert r_det - r_mov > 3 * seed_se, (r_det, r_mov, seed_se)
