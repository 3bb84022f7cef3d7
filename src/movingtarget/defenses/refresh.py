"""Continual refresh: pool members are replaced on a schedule, so what an attacker learned
about the deployed members goes stale.

A moving target (:class:`~movingtarget.defenses.moving_target.MovingTarget`) serves the
members of a :class:`~movingtarget.models.pool.ModelPool` in a secret order, but the
members themselves stay fixed: an attacker who screened a copy of the pool offline keeps
what it found for the whole deployment. :class:`Refresh` replaces members while the
defense is deployed. Every ``every`` arrival times it trains ``replace`` new members
(the oldest first, in turn) with the pool's own recipe
(:class:`~movingtarget.models.pool.MemberRecipe`: the same model, a fresh seed and
bootstrap resample) on the training data **plus every label the defense was given**
(:meth:`Defense.learn <movingtarget.defenses.base.Defense.learn>`), and keeps each new
member only if a held-out benign **canary** set says natural accuracy held
(:class:`~movingtarget.defenses.repair.Canary`); otherwise the old member stays and the
refresh is recorded as rolled back. Each refresh leaves a :class:`RefreshRecord` in
``records``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.datasets.base import Split
from movingtarget.defenses.base import Context
from movingtarget.defenses.labeling import DEFAULT_ASK_ON, parse_ask_on, reason_codes
from movingtarget.defenses.moving_target import check_pool
from movingtarget.defenses.repair import Canary, RepairRecord, check_tolerance
from movingtarget.errors import ConfigError
from movingtarget.models.base import Model
from movingtarget.models.pool import member_seed

__all__ = ["Refresh", "RefreshRecord", "supply_defense"]


@dataclass(frozen=True)
class RefreshRecord(RepairRecord):
    """One member refresh: a :class:`~movingtarget.defenses.repair.RepairRecord`
    (labels trained on, canary accuracy before and after, kept or rolled back) with the
    scheduled ``time`` and the ``member`` replaced.

    ``before`` and ``after`` are the pool's *served* canary accuracy: the mean of its
    members' accuracies, what a moving target that serves a uniformly drawn member
    answers correctly.

    Examples
    --------
    >>> r = RefreshRecord(labels=4, before=0.95, after=0.80, accepted=False, time=200, member=1)
    >>> r.drop, r.time
    (0.15, 200)
    """

    time: int = 0
    member: int = 0


def _positive_int(value: object, where: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise ConfigError(f"refresh: {where} must be an integer >= {least}, got {value!r}")
    return int(value)


class Refresh:
    """Replace pool members every ``every`` arrival times, gated on a canary set.

    A gate that decides no query: before the first query that arrives at or after the
    next scheduled time (``every``, ``2 * every``, ...), it refreshes. A batch that
    straddles a scheduled time is answered in two parts (:meth:`cuts`), so a refresh
    fires exactly on time, never before, whatever the batching.

    Parameters
    ----------
    every:
        Arrival times between refreshes (an integer >= 1): the refresh rate.
    replace:
        Members replaced per refresh (an integer >= 1; at most the pool's size), the
        longest-serving first, in turn.
    tolerance:
        Canary accuracy a refresh may lose, in ``[0, 1]``: a new member is kept only if
        the pool's served canary accuracy afterwards is at most ``tolerance`` below both
        its accuracy before the refresh and its accuracy as deployed (so natural
        accuracy cannot drift down refresh by refresh).
    ask_on:
        Reasons that ask for a label (as :class:`~movingtarget.defenses.correct.Correct`;
        ``none`` asks for nothing). Labels that arrive are added to every later new
        member's training set (at most ``max_labels``, the latest kept).
    max_labels:
        Labels kept for training (an integer >= 0).

    The training data and canary set come from :meth:`supply` (the experiment runner
    gives the training split and the benign pool); a refresh due before it is a
    :class:`~movingtarget.errors.ConfigError`. New members are trained with seeds drawn
    once from the defense's random generator, so a defense with a given seed refreshes
    the same way every time.

    Examples
    --------
    >>> Refresh(every=200).describe()
    'refresh(every=200)'
    >>> Refresh(every=50, replace=2, tolerance=0.02).describe()
    'refresh(every=50, replace=2, tolerance=0.02)'
    >>> Refresh(every=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    movingtarget.errors.ConfigError: refresh: every must be an integer >= 1, got 0
    """

    role = "gate"

    def __init__(
        self,
        every: int = 500,
        replace: int = 1,
        tolerance: float = 0.01,
        ask_on: str | Iterable[str] = DEFAULT_ASK_ON,
        max_labels: int = 10_000,
    ) -> None:
        self.every = _positive_int(every, "every")
        self.replace = _positive_int(replace, "replace")
        self.max_labels = _positive_int(max_labels, "max_labels", least=0)
        self.tolerance = check_tolerance(tolerance, "refresh")  # a config error now
        none = isinstance(ask_on, str) and ask_on.strip() in ("", "none")
        self.ask_names = () if none else parse_ask_on(ask_on, "refresh: ask_on")
        self.ask_on = reason_codes(self.ask_names)
        #: One record per member refresh, kept or rolled back, in order.
        self.records: list[RefreshRecord] = []
        self._pool: Any = None
        self._split: Split | None = None
        self._canary: Canary | None = None
        self._labels_x: list[NDArray[np.float32]] = []
        self._labels_y: list[NDArray[np.int64]] = []
        self._seed: int | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._next = self.every  # the next scheduled refresh
        self._anchored = False  # the schedule counts from the first arrival seen
        self._count = 0  # refreshes so far (each replaces `replace` members)
        self._turn = 0  # the member replaced next
        self._deployed: list[Model] | None = None  # the members as deployed
        self._accuracy: list[float] | None = None  # each member's canary accuracy
        self._deployed_accuracy = float("nan")
        self._labels_x.clear()
        self._labels_y.clear()

    def check_model(self, model: object) -> None:
        """Called by :class:`~movingtarget.defenses.base.Defense`: a pool with a recipe."""
        check_pool(model)
        if getattr(model, "recipe", None) is None:
            raise ConfigError(
                "refresh needs a pool built as model 'pool' (it trains new members with the "
                "pool's recipe); this pool has none"
            )
        if self.replace > len(model.members):  # type: ignore[attr-defined]
            raise ConfigError(
                f"refresh: replace ({self.replace}) must be at most the pool's "
                f"{len(model.members)} members"  # type: ignore[attr-defined]
            )
        self._pool = model

    def supply(
        self,
        split: Split,
        canary_x: NDArray[np.generic],
        canary_y: NDArray[np.integer] | Iterable[int],
    ) -> None:
        """The training data new members learn from (``split``'s training set) and the
        held-out benign canary set that gates each refresh."""
        self._split = split
        self._canary = Canary(canary_x, canary_y, tolerance=self.tolerance, where="refresh")
        self._accuracy = None

    def learn(
        self, x: NDArray[np.float32], y: NDArray[np.int64], times: NDArray[np.int64] | None = None
    ) -> None:
        """Keep labeled inputs for the next members' training sets."""
        if self.max_labels == 0:
            return
        self._labels_x.append(np.asarray(x, np.float32))
        self._labels_y.append(np.asarray(y, np.int64))
        kept = sum(len(v) for v in self._labels_y)
        while kept - len(self._labels_y[0]) >= self.max_labels:  # the latest are kept
            kept -= len(self._labels_y.pop(0))
            self._labels_x.pop(0)

    @property
    def labels(self) -> int:
        """Labels kept for training now."""
        return min(sum(len(v) for v in self._labels_y), self.max_labels)

    def cuts(self, times: NDArray[np.int64]) -> NDArray[np.int64]:
        """Positions in a batch of arrival ``times`` (increasing) where a scheduled
        refresh falls: :class:`~movingtarget.defenses.base.Defense` answers the batch in
        parts cut there, so every refresh fires on time whatever the batching.

        >>> Refresh(every=10).cuts(np.arange(5, 25)).tolist()
        [5, 15]
        """
        if not len(times):
            return np.zeros(0, np.int64)
        self._anchor(int(times[0]))
        last = int(times[-1])
        # one cut per due time, however long the batch spans (a quiet gateway: one)
        span = (last - self._next) // self.every + 1 if last >= self._next else 0
        due = self._next + self.every * np.arange(min(span, len(times)), dtype=np.int64)
        return np.searchsorted(times, due, side="left").astype(np.int64)

    def _anchor(self, first: int) -> None:
        """The schedule runs from time 0 (the arena's first arrival); a first arrival
        more than a period later (a gateway's times are milliseconds since the epoch,
        ``every`` a period in milliseconds) starts it there instead."""
        if not self._anchored:
            self._anchored = True
            if first >= self._next + self.every:
                self._next = first + self.every

    def __call__(self, ctx: Context) -> None:
        if not len(ctx.times):
            return
        first = int(ctx.times[0])
        self._anchor(first)
        if first >= self._next:
            self._refresh(self._next, ctx.rng)
            # after a gap of several periods (a quiet gateway) one refresh, not one each
            self._next += self.every * ((first - self._next) // self.every + 1)

    def _refresh(self, time: int, rng: np.random.Generator) -> None:
        pool = self._pool
        if self._split is None or self._canary is None:
            raise ConfigError(
                "refresh: no training data or canary set; give them with Refresh.supply "
                "(the experiment runner does)"
            )
        if self._seed is None:
            self._seed = int(rng.integers(0, 2**31 - 1))
        if self._deployed is None:
            self._deployed = list(pool.members)
        if self._accuracy is None:
            self._accuracy = [self._canary.accuracy(m) for m in pool.members]
            self._deployed_accuracy = float(np.mean(self._accuracy))
        extra_x = np.concatenate(self._labels_x)[-self.max_labels :] if self._labels_x else None
        extra_y = np.concatenate(self._labels_y)[-self.max_labels :] if self._labels_y else None
        for _ in range(self.replace):
            i = self._turn
            self._turn = (self._turn + 1) % len(pool.members)
            seed = member_seed(self._seed, self._count)
            self._count += 1
            new = pool.recipe.train(self._split, seed, extra_x, extra_y)
            acc = self._canary.accuracy(new)
            before = float(np.mean(self._accuracy))
            after = before + (acc - self._accuracy[i]) / len(pool.members)
            reference = max(before, self._deployed_accuracy)
            accepted = self._canary.holds(reference, after)
            if accepted:
                pool.members[i] = new
                self._accuracy[i] = acc
            self.records.append(
                RefreshRecord(
                    labels=0 if extra_y is None else len(extra_y),
                    before=before,
                    after=after,
                    accepted=accepted,
                    time=time,
                    member=i,
                )
            )

    def reset(self) -> None:
        """A new deployment: the pool's members as deployed, the schedule from time 0,
        no labels (the records and the drawn seed are kept)."""
        if self._deployed is not None and self._pool is not None:
            self._pool.members[:] = self._deployed
        self._reset_state()

    def describe(self) -> str:
        parts = [f"every={self.every}"]
        if self.replace != 1:
            parts.append(f"replace={self.replace}")
        if self.tolerance != 0.01:
            parts.append(f"tolerance={self.tolerance:g}")
        if self.ask_names != DEFAULT_ASK_ON:
            parts.append(f"ask_on={'+'.join(self.ask_names) or 'none'}")
        if self.max_labels != 10_000:
            parts.append(f"max_labels={self.max_labels}")
        return f"refresh({', '.join(parts)})"


def supply_defense(
    defense: Any,
    split: Split,
    canary_x: NDArray[np.generic],
    canary_y: NDArray[np.integer] | Iterable[int],
) -> int:
    """Give every mechanism of ``defense`` that trains new models (``supply``) the
    training data and the canary set; returns how many took them.

    >>> supply_defense(object(), None, [], [])
    0
    """
    taken = 0
    for mechanism in getattr(defense, "mechanisms", []):
        supply = getattr(mechanism, "supply", None)
        if callable(supply):
            supply(split, canary_x, canary_y)
            taken += 1
    return taken
