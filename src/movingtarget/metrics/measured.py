"""Measured metrics from an event log: ``r~``, abstention, benign accuracy, curves."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN
from movingtarget.arena.eventlog import EventLog
from movingtarget.attacks.base import success


def _rate(hits: NDArray[np.bool_]) -> float:
    return float(hits.mean()) if len(hits) else float("nan")


def repeat_mask(source: NDArray[np.int64]) -> NDArray[np.bool_]:
    """True where a query's source item was already queried earlier in ``source``."""
    _, first = np.unique(source, return_index=True)
    mask = np.ones(len(source), dtype=bool)
    mask[first] = False
    return mask


@dataclass(frozen=True)
class AttackMetrics:
    """What one adversary achieved in one deployment, and what benign users got.

    ``r_tilde`` is the share of the adversary's queries answered as it wanted (wrong,
    or the target class); ``r_tilde_late`` the same over the second half of its
    queries; ``r_tilde_repeats`` over its queries that repeat an input it already sent.
    ``queries_to_first_mistake`` is the 1-based index, among its queries, of its first
    success (NaN if it had none): natural sampling waits about ``1/r`` queries.

    What the attack cost beyond its queries: ``bad_queries``, its queries the defense
    refused (ABSTAIN answers: flagged as repeats, near repeats, low confidence or
    adversarial, or rate-limited), ``bad_queries_per_success`` (NaN without a success);
    ``accounts_used``, the distinct client ids it sent from, and ``accounts_burnt``, those
    of them that got at least one refusal (flagged or rate-limited).
    """

    queries: int
    r_tilde: float
    r_tilde_late: float
    r_tilde_repeats: float
    abstain_adversarial: float
    benign_queries: int
    abstain_benign: float
    benign_accuracy: float
    benign_error_answered: float
    #: Accuracy on the benign queries the defense answered (NaN if it answered none):
    #: what abstention costs is ``abstain_benign``, reported beside it.
    benign_accuracy_answered: float = float("nan")
    queries_to_first_mistake: float = float("nan")
    bad_queries: int = 0
    bad_queries_per_success: float = float("nan")
    accounts_used: int = 0
    accounts_burnt: int = 0

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict (for JSON)."""
        return asdict(self)


def attack_metrics(log: EventLog, adversary: int = 0) -> AttackMetrics:
    """Metrics of adversary ``adversary`` (its index in the log) and of benign traffic.

    Examples
    --------
    >>> import numpy as np
    >>> from movingtarget.arena import EventLog
    >>> z = np.zeros(4, np.int64)
    >>> log = EventLog(t=np.arange(4), round=z, client=z, adversary=z, source=z, noisy=z,
    ...                y_true=z, target=z - 1, answer=np.array([1, 1, -1, 0]),
    ...                reason=np.zeros(4, np.uint8), adversaries=["test-set"])
    >>> m = attack_metrics(log); m.r_tilde, m.queries_to_first_mistake
    (0.5, 1.0)
    >>> m.bad_queries, m.bad_queries_per_success, m.accounts_used, m.accounts_burnt
    (1, 0.5, 1, 1)
    """
    mine = log.adversary == adversary
    wins = success(log.answer[mine], log.y_true[mine], log.target[mine])
    n = int(mine.sum())
    late = wins[n // 2 :]
    repeats = wins[repeat_mask(log.source[mine])]
    refused = log.answer[mine] == ABSTAIN
    clients = log.client[mine]
    n_wins, bad = int(wins.sum()), int(refused.sum())
    benign = log.adversary < 0
    b_answer, b_true = log.answer[benign], log.y_true[benign]
    answered = b_answer != ABSTAIN
    return AttackMetrics(
        queries=n,
        r_tilde=_rate(wins),
        r_tilde_late=_rate(late),
        r_tilde_repeats=_rate(repeats),
        abstain_adversarial=_rate(refused),
        benign_queries=int(benign.sum()),
        abstain_benign=_rate(~answered),
        benign_accuracy=_rate(b_answer == b_true),
        benign_error_answered=_rate(b_answer[answered] != b_true[answered]),
        benign_accuracy_answered=_rate(b_answer[answered] == b_true[answered]),
        queries_to_first_mistake=float(np.argmax(wins) + 1) if wins.any() else float("nan"),
        bad_queries=bad,
        bad_queries_per_success=bad / n_wins if n_wins else float("nan"),
        accounts_used=len(np.unique(clients)),
        accounts_burnt=len(np.unique(clients[refused])),
    )


def benign_false_abstention(log: EventLog) -> float:
    """Share of *fresh* benign queries (an item's first appearance in the benign
    stream) answered ABSTAIN: abstentions a memory cannot justify by a repeat.
    Exact and near duplicates of earlier benign items are not fresh.

    >>> import numpy as np
    >>> from movingtarget.arena import EventLog
    >>> z = np.zeros(4, np.int64)
    >>> log = EventLog(t=np.arange(4), round=z, client=z, adversary=z - 1,
    ...                source=np.array([0, 1, 0, 2]), noisy=z, y_true=z, target=z - 1,
    ...                answer=np.array([0, -1, -1, 0]), reason=np.zeros(4, np.uint8),
    ...                adversaries=[])
    >>> benign_false_abstention(log)   # item 1 (fresh) abstained; item 0's repeat is not fresh
    0.3333333333333333
    """
    benign = log.adversary < 0
    fresh = ~repeat_mask(log.source[benign])
    return _rate(log.answer[benign][fresh] == ABSTAIN)


def cumulative_r_tilde(log: EventLog, adversary: int = 0) -> NDArray[np.float64]:
    """``r~`` after each of the adversary's queries: successes so far / queries so far."""
    mine = log.adversary == adversary
    wins = success(log.answer[mine], log.y_true[mine], log.target[mine])
    return np.cumsum(wins) / np.arange(1, len(wins) + 1)


def natural_error(proba: NDArray[np.float64], y: NDArray[np.int64]) -> float:
    """``r``: the share of i.i.d. test inputs whose argmax is wrong."""
    return float((np.asarray(proba).argmax(axis=1) != y).mean())
