"""Asking for labels: which queries are troubling, and the labeling queue.

The contract follows river's active learners (a learner returns ``(y_pred,
ask_for_label)``): a mechanism that learns from labels names the answer *reasons*
that make a query troubling (``ask_on``), and :meth:`Defense.answer
<movingtarget.defenses.base.Defense.answer>` marks every query whose final reason is
one of them in ``Answers.ask``. Starting from reasons means any mechanism's refusal
(an exact or near repeat, low confidence, member disagreement, an adversarial score)
can trigger a label request without that mechanism knowing about labels.

A :class:`LabelingQueue` holds the asked queries for a labeler (the arena's oracle, a
person behind the gateway) under a budget: at most ``budget`` labels per ``window``
queries of the timeline; what is over budget is dropped, and an input already asked
(same exact fingerprint) is not asked again, so an attacker repeating one mistake
spends one label, not the budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import Reason
from movingtarget.errors import ConfigError
from movingtarget.memory.fingerprints.exact import ExactFingerprint

#: The reasons that make a query troubling by default: every flag a mechanism raises
#: (not rate limits: a flood of queries says nothing about any one input).
DEFAULT_ASK_ON = (
    "repeat",
    "repeat-random",
    "near-repeat",
    "near-repeat-random",
    "low-confidence",
    "disagreement",
    "adversarial-likelihood",
)


def parse_ask_on(value: str | Iterable[str], where: str) -> tuple[str, ...]:
    """Reason labels from ``"repeat+low-confidence"`` (composition text joins them with
    ``+``, since ``,`` separates parameters) or a list; a :class:`ConfigError` names
    ``where`` and the unknown reason.

    >>> parse_ask_on("repeat+near-repeat", "correct: ask_on")
    ('repeat', 'near-repeat')
    >>> parse_ask_on(["bogus"], "correct: ask_on")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    movingtarget.errors.ConfigError: correct: ask_on: unknown reason 'bogus'; ...
    """
    items = value.split("+") if isinstance(value, str) else list(value)
    names = [str(v).strip() for v in items if str(v).strip()]
    known = [r.label for r in Reason if r not in (Reason.UNDECIDED, Reason.CORRECTED)]
    for name in names:
        if name not in known:
            raise ConfigError(f"{where}: unknown reason {name!r}; reasons: {', '.join(known)}")
    return tuple(dict.fromkeys(names))  # keep the order, drop repeats


def reason_codes(names: Iterable[str]) -> frozenset[int]:
    """The :class:`Reason` codes of reason labels.

    >>> sorted(reason_codes(["repeat", "model"]))
    [1, 3]
    """
    return frozenset(int(Reason.from_label(n)) for n in names)


@dataclass
class Labels:
    """Labeled queries handed to a defense: inputs, true classes, the times they were
    asked, and the time (next query's arrival) they were delivered.

    Examples
    --------
    >>> z = np.zeros(0, np.int64)
    >>> len(Labels(np.zeros((0, 2), np.float32), z, z, z))
    0
    """

    x: NDArray[np.float32]
    y: NDArray[np.int64]
    asked_at: NDArray[np.int64]
    delivered_at: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.y.shape[0])


class LabelingQueue:
    """Asked queries waiting for a label, under a budget and a delay.

    Parameters
    ----------
    budget:
        Labels given per ``window`` queries (counted by the time a query was asked).
    window:
        0: the budget covers the whole timeline; N > 0: ``budget`` labels per N queries.
    delay:
        Queries answered after an ask before its label arrives: a query asked at time
        ``t`` is labeled once the query at ``t + delay`` has been answered, so it can
        change answers from ``t + delay + 1`` on.
    secret:
        Keys the exact fingerprints that recognise an input already asked.

    Examples
    --------
    >>> q = LabelingQueue(budget=2, delay=3)
    >>> x = np.eye(3, dtype=np.float32)
    >>> q.ask(x, np.array([0, 1, 2]), np.array([0, 1, 2]), np.zeros(3, np.int64))
    2
    >>> q.dropped, len(q.due(3)), len(q.due(4)), q.delivered
    (1, 0, 1, 1)
    """

    def __init__(
        self, budget: int, *, window: int = 0, delay: int = 0, secret: bytes | str | None = None
    ) -> None:
        for field, value in (("budget", budget), ("window", window), ("delay", delay)):
            if not isinstance(value, int | np.integer) or value < 0:
                raise ConfigError(f"labeling queue: {field} must be an integer >= 0, got {value!r}")
        self.budget, self.window, self.delay = int(budget), int(window), int(delay)
        self._fingerprint = ExactFingerprint(secret)
        self._asked_keys: set[int] = set()
        self._spent: dict[int, int] = {}  # window index -> labels granted
        self._pending: list[tuple[NDArray[np.float32], int, int, int]] = []
        self.asked = 0  # asks received (before the budget and the repeat check)
        self.granted = 0  # asks within budget (labels that will be given)
        self.dropped = 0  # asks over budget
        self.already_asked = 0  # asks for an input already asked
        self.delivered = 0  # labels handed out by due()
        self._delivered: list[Labels] = []

    def ask(
        self,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        times: NDArray[np.int64],
        clients: NDArray[np.int64],
    ) -> int:
        """Queue asked queries (in arrival order) with their true classes ``y``; returns
        how many were granted a label."""
        n = len(y)
        if n == 0:
            return 0
        self.asked += n
        keys = self._fingerprint.fingerprint(x).tolist()
        granted = 0
        # a short loop: only asked queries reach it, and each needs the budget so far
        for i in range(n):
            if keys[i] in self._asked_keys:
                self.already_asked += 1
                continue
            t = int(times[i])
            slot = t // self.window if self.window else 0
            if self._spent.get(slot, 0) >= self.budget:
                self.dropped += 1
                continue
            self._spent[slot] = self._spent.get(slot, 0) + 1
            self._asked_keys.add(keys[i])
            self._pending.append((np.array(x[i], np.float32), int(y[i]), t, int(clients[i])))
            granted += 1
        self.granted += granted
        return granted

    def due(self, now: int) -> Labels:
        """The labels that arrive before the query at time ``now`` (asked at ``t`` with
        ``t + delay < now``), removed from the queue."""
        ready = [p for p in self._pending if p[2] + self.delay < now]
        if not ready:
            return _EMPTY
        self._pending = [p for p in self._pending if p[2] + self.delay >= now]
        out = Labels(
            x=np.stack([p[0] for p in ready]),
            y=np.array([p[1] for p in ready], np.int64),
            asked_at=np.array([p[2] for p in ready], np.int64),
            delivered_at=np.full(len(ready), now, np.int64),
        )
        self.delivered += len(out)
        self._delivered.append(out)
        return out

    @property
    def pending(self) -> int:
        """Granted asks whose label has not arrived yet."""
        return len(self._pending)

    def history(self) -> Labels:
        """Every label delivered so far, in delivery order."""
        if not self._delivered:
            return _EMPTY
        parts = self._delivered
        return Labels(
            x=np.concatenate([p.x for p in parts]),
            y=np.concatenate([p.y for p in parts]),
            asked_at=np.concatenate([p.asked_at for p in parts]),
            delivered_at=np.concatenate([p.delivered_at for p in parts]),
        )


_EMPTY = Labels(
    np.zeros((0, 0), np.float32),
    np.zeros(0, np.int64),
    np.zeros(0, np.int64),
    np.zeros(0, np.int64),
)
