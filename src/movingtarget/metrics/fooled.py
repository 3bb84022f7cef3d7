"""What an attacker got per source input: the OARS / QPA metric and the perturbation.

A query-based attack works on one source input at a time and succeeds on it when one of
its queries built from that source is answered as it wanted. :func:`fooled_metrics`
reads that from an event log:

* ``inputs_attacked``: distinct source inputs the adversary sent queries for;
* ``inputs_fooled``: the share of them with at least one success within the budget
  (the per-input attack success rate of OARS, CCS 2023, and QPA, 2024);
* ``perturbation_l2`` / ``perturbation_linf``: over the fooled sources, the median of
  the smallest L2 / L∞ distance between a successful query and its clean source (the
  adversarial example the attacker would keep). A correlated attacker that repeats
  natural mistakes has perturbation 0; NaN when nothing was fooled or the log keeps no
  inputs.

Benign users are judged beside it on two kinds of traffic
(:func:`benign_near_false_abstention`): Blacklight's 0.1 % false positives on i.i.d.
queries rose to 31.7 % on similar benign queries.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN
from movingtarget.arena.eventlog import EventLog
from movingtarget.attacks.base import success


def fooled_metrics(
    log: EventLog, pool_x: NDArray[np.float32] | None = None, adversary: int = 0
) -> dict[str, float | int]:
    """Per-input success and perturbation of ``adversary`` (module docs); ``pool_x`` is
    its pool (the clean sources), needed for the perturbation.

    >>> z = np.zeros(4, np.int64)
    >>> log = EventLog(t=np.arange(4), round=z, client=z, adversary=z,
    ...                source=np.array([0, 0, 1, 1]), noisy=z + 1, y_true=z,
    ...                target=z - 1, answer=np.array([0, 2, 0, 0]),
    ...                reason=np.ones(4, np.uint8), adversaries=["a"],
    ...                x=np.array([[0.0, 0.0], [0.3, -0.4], [1.0, 1.0], [1.0, 1.1]], np.float32))
    >>> m = fooled_metrics(log, np.array([[0.0, 0.0], [1.0, 1.0]], np.float32))
    >>> m["inputs_attacked"], m["inputs_fooled"], round(m["perturbation_l2"], 3)
    (2, 0.5, 0.5)
    """
    mine = log.adversary == adversary
    source = log.source[mine]
    wins = success(log.answer[mine], log.y_true[mine], log.target[mine])
    attacked = np.unique(source)
    fooled = np.unique(source[wins])
    out: dict[str, float | int] = {
        "inputs_attacked": len(attacked),
        "inputs_fooled": len(fooled) / len(attacked) if len(attacked) else float("nan"),
        "perturbation_l2": float("nan"),
        "perturbation_linf": float("nan"),
    }
    if log.x is None or pool_x is None or not len(fooled):
        return out
    x = log.x[mine][wins].reshape(int(wins.sum()), -1).astype(np.float64)
    src = source[wins]
    delta = x - np.asarray(pool_x, np.float64).reshape(len(pool_x), -1)[src]
    for name, dist in (
        ("perturbation_l2", np.linalg.norm(delta, axis=1)),
        ("perturbation_linf", np.abs(delta).max(axis=1)),
    ):
        # the smallest distance per fooled source: sort by (source, distance), first of each
        order = np.lexsort((dist, src))
        first = np.r_[True, src[order][1:] != src[order][:-1]]
        out[name] = float(np.median(dist[order][first]))
    return out


def benign_near_false_abstention(log: EventLog) -> float:
    """Share of benign *near-duplicate* queries (an earlier benign item again, transformed:
    the arena's ``near_duplicate_share``) answered ABSTAIN; NaN when there were none.
    Benign users legitimately send similar inputs, so every such refusal is a false
    one (the i.i.d. rate is
    :func:`~movingtarget.metrics.measured.benign_false_abstention`).

    >>> z = np.zeros(3, np.int64)
    >>> log = EventLog(t=np.arange(3), round=z, client=z, adversary=z - 1,
    ...                source=np.array([0, 0, 0]), noisy=np.array([0, 1, 1]), y_true=z,
    ...                target=z - 1, answer=np.array([0, -1, 0]),
    ...                reason=np.ones(3, np.uint8), adversaries=[])
    >>> benign_near_false_abstention(log)
    0.5
    """
    near = (log.adversary < 0) & (log.noisy == 1)
    if not near.any():
        return float("nan")
    return float((log.answer[near] == ABSTAIN).mean())
