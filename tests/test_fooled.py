"""Per-input success and perturbation (``metrics/fooled.py``) on a real bridged attack,
recomputed here one source at a time."""

from __future__ import annotations

import numpy as np
import pytest

from movingtarget.arena import Arena, ArenaConfig
from movingtarget.attacks import build_adversary
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense
from movingtarget.experiment.runner import make_pools
from movingtarget.metrics.fooled import benign_near_false_abstention, fooled_metrics
from movingtarget.models import build_model

pytest.importorskip("art")

EPS = 0.1  # Square's L-inf budget


def test_square_fools_inputs_within_its_budget_and_the_metrics_agree_source_by_source() -> None:
    split = load_dataset("digits").split(test_size=0.5, seed=0)
    model = build_model("logistic", split, seed=0, cache_dir=None)
    pools = make_pools(split.x_test, split.y_test, "split", 0)
    adv = build_adversary(
        "square", pools.attacker_x, pools.attacker_y, 10, seed=0, eps=EPS, max_iter=50
    )
    cfg = ArenaConfig(queries=600, benign_ratio=0.5, near_duplicate_share=0.3)
    log = Arena(cfg).run(
        build_defense("near-repeat-abstain", model, seed=0),
        [adv],
        pools.benign_x,
        pools.benign_y,
        seed=0,
        inputs=True,
    )
    m = fooled_metrics(log, pools.attacker_x)
    assert log.x is not None
    mine = log.adversary == 0
    fooled, l2, linf = [], [], []
    sources = sorted(set(log.source[mine].tolist()))
    for s in sources:
        rows = np.flatnonzero(mine & (log.source == s))
        won = [i for i in rows if log.answer[i] not in (-1, log.y_true[i])]
        fooled.append(bool(won))
        if won:
            d = [log.x[i].ravel().astype(np.float64) - pools.attacker_x[s].ravel() for i in won]
            l2.append(min(float(np.sqrt((v * v).sum())) for v in d))
            linf.append(min(float(np.abs(v).max()) for v in d))
    assert m["inputs_attacked"] == len(sources) > 1
    assert m["inputs_fooled"] == pytest.approx(np.mean(fooled))
    assert 0 < m["inputs_fooled"] < 1
    assert m["perturbation_l2"] == pytest.approx(np.median(l2))
    assert m["perturbation_linf"] == pytest.approx(np.median(linf))
    assert 0 < m["perturbation_linf"] <= EPS + 1e-6  # Square stays in its L-inf ball
    # near-duplicate benign traffic was sent and judged apart from the fresh queries
    near = (log.adversary < 0) & (log.noisy == 1)
    assert near.sum() > 20
    assert benign_near_false_abstention(log) == pytest.approx((log.answer[near] == -1).mean())
