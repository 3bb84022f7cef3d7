"""Access that tightens with suspicion (Goodfellow 2019, section 7.3, made dynamic).

A query-based attacker leaves two traces a single query does not: the defense keeps
flagging its queries (refusals as repeats, near repeats, member disagreement or
adversarial likelihood), and its successive queries are small steps from each other
(HopSkipJump's binary searches and gradient estimates walk along the boundary; Square
changes one tile at a time). :class:`Suspicion` keeps one score per client that adds
both, forgets at a rate per query of that client, and acts on it:

* **throttled** while the score is at least ``throttle_at``: the client gets at most one
  answer per ``throttle_every`` time units, its other queries (those the rest of the
  defense would answer) ABSTAIN with reason ``rate-limited`` and count as flagged (a
  client that keeps pushing while throttled is the one that gets suspended);
* **suspended** once the score reaches ``suspend_at``: every later query of the client
  ABSTAINs with reason ``suspended``, until :meth:`Suspicion.lift` (an operator) or a
  new deployment (:meth:`reset`).

A benign user's queries are independent draws, so its steps are as far apart as two
distinct benign inputs, and memories flag it only for the legitimate duplicates it
sends. ``step`` is calibrated on benign data (:meth:`Suspicion.calibrate`): the
``step_quantile`` quantile of L2 distances between pairs of distinct benign inputs, so
a benign pair counts as a small step that rarely.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter

from movingtarget.answers import ABSTAIN, Reason
from movingtarget.defenses.base import Context
from movingtarget.errors import ConfigError
from movingtarget.memory.fingerprints.calibration import Calibration

#: Reasons that flag a query as the defense's detection of it (its own refusals aside).
FLAG_REASONS = (
    "repeat",
    "repeat-random",
    "near-repeat",
    "near-repeat-random",
    "disagreement",
    "adversarial-likelihood",
)

#: Pairs of benign inputs drawn to calibrate ``step``.
CALIBRATION_PAIRS = 20000

#: Client runs in one batch up to this long are scored together, step by step; a
#: longer run alone (one recursion in C).
_SHORT_RUN = 64


class Suspicion:
    """Filter: a per-client suspicion score that throttles, then suspends the client.

    Each query of client ``c`` updates its score ``s <- decay * s + max(flag_weight *
    flagged, step_weight * small_step)``; a query is judged on the score *before* it (the
    client's past), so the first queries of anybody are answered as the rest of the
    defense decides.

    Parameters
    ----------
    suspend_at, throttle_at:
        Score thresholds (``throttle_at <= suspend_at``; ``throttle_at = suspend_at``
        means no throttling phase).
    throttle_every:
        A throttled client's answers are at least this many time units apart.
    decay:
        How much of its score a client keeps per query it sends, in ``(0, 1]``.
    flag_weight, step_weight:
        Score per flagged query, and per query within ``step`` of one of the client's
        ``history`` queries before it (a small step: an attacker walking, or hiding each
        step among a few cover queries).
    flags:
        Reason labels that count as flagged (default :data:`FLAG_REASONS`).
    step:
        L2 distance below which a step is small; ``None``: set by :meth:`calibrate`
        (until then steps do not count).
    step_quantile:
        Share of benign pairs :meth:`calibrate` lets count as small steps.

    Examples
    --------
    >>> import numpy as np
    >>> from movingtarget.defenses import Defense, Argmax, Memorize
    >>> class Half:
    ...     n_classes = 2
    ...     def predict_proba(self, x):
    ...         return np.tile([0.4, 0.6], (len(x), 1))
    >>> d = Defense(Half(), [Memorize(on_repeat="abstain"), Argmax(),
    ...                      Suspicion(suspend_at=2, throttle_at=2, decay=1.0)])
    >>> x = np.zeros((5, 3), np.float32)        # one input, sent five times
    >>> a = d.answer(x, np.zeros(5, np.int64))
    >>> a.reason_labels()                       # two refusals, then suspended
    ['model', 'repeat', 'repeat', 'suspended', 'suspended']
    """

    role = "filter"

    def __init__(
        self,
        *,
        suspend_at: float = 6.0,
        throttle_at: float = 3.0,
        throttle_every: int = 10,
        decay: float = 0.95,
        flag_weight: float = 1.0,
        step_weight: float = 1.0,
        flags: tuple[str, ...] | list[str] | None = None,
        step: float | None = None,
        step_quantile: float = 0.001,
        history: int = 8,
    ) -> None:
        for name, value in (("suspend_at", suspend_at), ("throttle_at", throttle_at)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"suspicion: {name} must be a positive number, got {value!r}")
        if throttle_at > suspend_at:
            raise ConfigError(
                f"suspicion: throttle_at ({throttle_at}) must not exceed suspend_at ({suspend_at})"
            )
        if not isinstance(throttle_every, int) or throttle_every < 1:
            raise ConfigError(
                f"suspicion: throttle_every must be an integer >= 1, got {throttle_every!r}"
            )
        if not (isinstance(decay, int | float) and 0 < decay <= 1):
            raise ConfigError(f"suspicion: decay must be in (0, 1], got {decay!r}")
        for name, value in (("flag_weight", flag_weight), ("step_weight", step_weight)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"suspicion: {name} must be a number >= 0, got {value!r}")
        if step is not None and not (isinstance(step, int | float) and step >= 0):
            raise ConfigError(f"suspicion: step must be a distance >= 0, got {step!r}")
        if not isinstance(history, int) or history < 1:
            raise ConfigError(f"suspicion: history must be an integer >= 1, got {history!r}")
        if not 0 < step_quantile < 1:
            raise ConfigError(f"suspicion: step_quantile must be in (0, 1), got {step_quantile!r}")
        labels = list(FLAG_REASONS if flags is None else flags)
        known = {r.label for r in Reason}
        bad = [f for f in labels if f not in known]
        if bad:
            raise ConfigError(
                f"suspicion: unknown reason(s) in flags: {', '.join(map(repr, bad))} "
                f"(reasons: {', '.join(sorted(known))})"
            )
        self.suspend_at, self.throttle_at = float(suspend_at), float(throttle_at)
        self.throttle_every = int(throttle_every)
        self.decay = float(decay)
        self.flag_weight, self.step_weight = float(flag_weight), float(step_weight)
        self.flags = tuple(labels)
        self._flag_codes = np.array([int(Reason.from_label(f)) for f in labels], np.uint8)
        self.step = None if step is None else float(step)
        self._step_given = step is not None
        self.step_quantile = float(step_quantile)
        self.history = int(history)
        self.reset()

    def reset(self) -> None:
        """A new deployment: every client's score, last query and suspension forgotten
        (the calibrated ``step`` stays)."""
        self._score: dict[int, float] = {}
        self._last: dict[int, NDArray[np.float32]] = {}  # each client's last queries
        self._answered_at: dict[int, int] = {}
        #: Suspended client ids, and the time each was suspended.
        self.suspended: dict[int, int] = {}

    def lift(self, client: int) -> None:
        """Lift ``client``'s suspension and clear its score (an operator's decision)."""
        self.suspended.pop(int(client), None)
        self._score.pop(int(client), None)

    def score(self, client: int) -> float:
        """``client``'s current score."""
        return self._score.get(int(client), 0.0)

    def describe(self) -> str:
        defaults = Suspicion()
        parts = [
            f"{name}={getattr(self, name)!r}"
            for name in (
                "suspend_at",
                "throttle_at",
                "throttle_every",
                "decay",
                "flag_weight",
                "step_weight",
                "step_quantile",
                "history",
            )
            if getattr(self, name) != getattr(defaults, name)
        ]
        if self.flags != defaults.flags:
            parts.append(f"flags={list(self.flags)!r}")
        if self._step_given:
            parts.append(f"step={self.step!r}")
        return f"suspicion({', '.join(parts)})" if parts else "suspicion"

    # -- calibration ----------------------------------------------------------------
    def calibrate(
        self,
        x_benign: NDArray[np.generic],
        x_heldout: NDArray[np.generic] | None = None,
        *,
        model: Any = None,
        seed: int = 0,
        **_: Any,
    ) -> Calibration:
        """Set ``step`` to the ``step_quantile`` quantile of L2 distances between seeded
        random pairs of distinct benign inputs; report the share of held-out pairs
        under it. A ``step`` given at construction is kept (and reported)."""
        x = np.asarray(x_benign, np.float64).reshape(len(x_benign), -1)
        if len(x) < 2:
            raise ConfigError("suspicion: calibration needs at least 2 benign inputs")
        rng = np.random.default_rng([seed, 0x5A5])
        d = _pair_distances(x, rng)
        if not self._step_given:
            self.step = float(np.quantile(d, self.step_quantile))
        assert self.step is not None
        held_rate, held_se, n_held = 0.0, 0.0, 0
        if x_heldout is not None and len(x_heldout) >= 2:
            h = np.asarray(x_heldout, np.float64).reshape(len(x_heldout), -1)
            dh = _pair_distances(h, rng)
            n_held = len(dh)
            held_rate = float((dh < self.step).mean())
            held_se = math.sqrt(max(held_rate * (1 - held_rate), 1e-12) / n_held)
        return Calibration(
            "suspicion",
            "step",
            self.step,
            self.step_quantile,
            float((d < self.step).mean()),
            len(d),
            held_rate,
            held_se,
            n_held,
        )

    # -- the filter -----------------------------------------------------------------
    def __call__(self, ctx: Context) -> None:
        answers = ctx.answers
        flagged = (answers.labels == ABSTAIN) & np.isin(answers.reasons, self._flag_codes)
        flat = ctx.x.reshape(len(ctx.x), -1)
        clients = ctx.clients
        order = np.argsort(clients, kind="stable")  # each client's queries, in arrival order
        sorted_clients = clients[order]
        starts = np.flatnonzero(np.r_[True, sorted_clients[1:] != sorted_clients[:-1]])
        ends = np.r_[starts[1:], len(order)]
        ids = sorted_clients[starts].tolist()
        # every client at once where nothing is to be acted on (the common case); one
        # client after the other only where a score reaches a threshold
        for i in self._quiet_clients(ids, starts, ends, order, flagged, flat, ctx):
            self._client(ids[i], order[starts[i] : ends[i]], flagged, flat, ctx)

    def _quiet_clients(
        self,
        ids: list[int],
        starts: NDArray[np.intp],
        ends: NDArray[np.intp],
        order: NDArray[np.intp],
        flagged: NDArray[np.bool_],
        flat: NDArray[np.float32],
        ctx: Context,
    ) -> list[int]:
        """Update, for all clients of the batch at once, those whose scores stay below
        ``throttle_at`` throughout (their answers stand); return the indices of the
        others (suspended, or reaching a threshold), which :meth:`_client` takes one by
        one from the state this left untouched."""
        n_seg, n = len(ids), len(order)
        lengths = ends - starts
        seg = np.repeat(np.arange(n_seg), lengths)  # segment of each sorted row
        local = np.arange(n) - starts[seg]  # index of the row within its client's run
        histories = [self._last.get(c) for c in ids]
        hlen = np.array([0 if h is None else len(h) for h in histories], np.intp)
        events = self.flag_weight * flagged[order].astype(np.float64)
        xs = flat[order]  # each client's run, contiguous, in arrival order
        if self.step is not None and self.step_weight:
            small = self._small_steps_all(xs, histories, hlen, seg, local)
            # one sign per query (see _client)
            events = np.maximum(events, self.step_weight * small)
        prior = np.array([self._score.get(c, 0.0) for c in ids])
        # s_j = decay * s_{j-1} + e_j along each client's run: all runs step j together
        # (runs are short when many clients share a batch); a long run is one C loop
        after = np.empty(n)
        long_runs = np.flatnonzero(lengths > _SHORT_RUN)
        short_len = np.where(lengths > _SHORT_RUN, 0, lengths)
        prev = prior.copy()
        for j in range(int(short_len.max(initial=0))):
            live = np.flatnonzero(short_len > j)
            rows = starts[live] + j
            prev[live] = self.decay * prev[live] + events[rows]
            after[rows] = prev[live]
        for i in long_runs.tolist():
            lo, hi = int(starts[i]), int(ends[i])
            after[lo:hi] = lfilter(
                [1.0], [1.0, -self.decay], events[lo:hi], zi=[self.decay * prior[i]]
            )[0]
        before = np.where(local == 0, prior[seg], np.r_[0.0, after[:-1]])
        loud = np.maximum.reduceat(before, starts) >= self.throttle_at
        suspended = np.array([c in self.suspended for c in ids], bool)
        slow = loud | suspended
        answered = ctx.answers.labels[order] != ABSTAIN
        last_answer = np.maximum.reduceat(np.where(answered, ctx.times[order], -1), starts)
        final = after[ends - 1]
        quiet = np.flatnonzero(~slow)
        for i in quiet.tolist():
            c = ids[i]
            self._score[c] = float(final[i])
            if last_answer[i] >= 0:
                self._answered_at[c] = int(last_answer[i])
            run = xs[starts[i] : ends[i]]
            h = histories[i]
            if len(run) < self.history and h is not None:
                run = np.concatenate([h, run])
            self._last[c] = run[-self.history :].copy()
        return np.flatnonzero(slow).tolist()

    def _small_steps_all(
        self,
        xs: NDArray[np.float32],
        histories: list[NDArray[np.float32] | None],
        hlen: NDArray[np.intp],
        seg: NDArray[np.intp],
        local: NDArray[np.intp],
    ) -> NDArray[np.bool_]:
        """:meth:`_small_steps` for every client's run at once: the query ``k`` rows
        back is row ``r - k`` of the same run (contiguous slices), or, early in a run,
        a row of that client's history."""
        assert self.step is not None
        n = len(xs)
        best = np.full(n, np.inf)
        kept = [h for h in histories if h is not None and len(h)]
        hist = np.concatenate(kept) if kept else xs[:0]
        hend = np.cumsum(hlen)
        for k in range(1, self.history + 1):
            rows = np.flatnonzero(local >= k)  # the same run, k rows back
            if 2 * len(rows) > n:  # most rows: contiguous slices beat a gather
                diff = xs[k:] - xs[:-k]  # float32 differences: no cancellation
                d2 = np.einsum("ij,ij->i", diff, diff)
                np.minimum(best[k:], np.where(local[k:] >= k, d2, np.inf), out=best[k:])
            elif len(rows):  # many short runs (many clients): only the rows that have one
                diff = xs[rows] - xs[rows - k]
                best[rows] = np.minimum(best[rows], np.einsum("ij,ij->i", diff, diff))
            back = np.flatnonzero((local < k) & (hlen[seg] >= k - local))
            if len(back):  # the client's history, k - local rows from its end
                diff = xs[back] - hist[hend[seg[back]] - (k - local[back])]
                best[back] = np.minimum(best[back], np.einsum("ij,ij->i", diff, diff))
        return np.sqrt(best) < self.step

    def _client(
        self,
        client: int,
        rows: NDArray[np.intp],
        flagged: NDArray[np.bool_],
        flat: NDArray[np.float32],
        ctx: Context,
    ) -> None:
        answers = ctx.answers
        x = flat[rows]
        history = self._last.get(client)
        seen = x if history is None else np.concatenate([history, x])
        self._last[client] = seen[-self.history :].copy()
        if client in self.suspended:
            answers.labels[rows] = ABSTAIN
            answers.reasons[rows] = int(Reason.SUSPENDED)
            return
        events = self.flag_weight * flagged[rows]
        if self.step is not None and self.step_weight:
            # one sign per query: a refused small step counts once, so a user re-sending
            # near-duplicates of its own inputs does not pay twice for each
            events = np.maximum(events, self.step_weight * self._small_steps(x, seen))
        prior = self._score.get(client, 0.0)
        # s_j = decay * s_{j-1} + e_j: a first-order recursion, one C loop
        after = lfilter([1.0], [1.0, -self.decay], events, zi=[self.decay * prior])[0]
        before_score = np.r_[prior, after[:-1]]
        times = ctx.times[rows]
        answered = answers.labels[rows] != ABSTAIN
        if before_score.max() < self.throttle_at:  # the common case: nothing to act on
            self._score[client] = float(after[-1])
            if answered.any():
                self._answered_at[client] = int(times[answered].max())
            return
        # a suspicious client, one query after the other: a throttled query refused
        # counts as flagged too (pushing on while throttled is what gets it suspended)
        score, last = prior, self._answered_at.get(client)
        for j in range(len(rows)):
            t = int(times[j])
            e = float(events[j])
            if score >= self.suspend_at:
                self.suspended[client] = t
                answers.labels[rows[j:]] = ABSTAIN
                answers.reasons[rows[j:]] = int(Reason.SUSPENDED)
                break
            throttled = score >= self.throttle_at and last is not None
            if answered[j] and throttled and t - last < self.throttle_every:  # type: ignore[operator]
                answers.labels[rows[j]] = ABSTAIN
                answers.reasons[rows[j]] = int(Reason.RATE_LIMITED)
                e += self.flag_weight * (not flagged[rows[j]])
            elif answered[j]:
                last = t
            score = self.decay * score + e
        self._score[client] = score
        if last is not None:
            self._answered_at[client] = last

    def _small_steps(self, x: NDArray[np.float32], seen: NDArray[np.float32]) -> NDArray[np.bool_]:
        """Queries within ``step`` of one of the client's ``history`` queries before them."""
        assert self.step is not None
        return _window_min_distance(x, seen, self.history) < self.step


def _window_min_distance(
    x: NDArray[np.float32], seen: NDArray[np.float32], window: int
) -> NDArray[np.float64]:
    """For each row ``j`` of ``x`` (the last ``len(x)`` rows of ``seen``), the smallest L2
    distance to the ``window`` rows of ``seen`` just before it (inf when there are none)."""
    n, h = len(x), len(seen) - len(x)
    a = x.astype(np.float64)
    b = seen.astype(np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    col = np.arange(len(seen))[None, :]
    me = h + np.arange(n)[:, None]
    d2[(col >= me) | (col < me - window)] = np.inf
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0))


def _pair_distances(x: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    """L2 distances of seeded random pairs of distinct rows of ``x``."""
    n = len(x)
    i = rng.integers(0, n, CALIBRATION_PAIRS)
    j = (i + rng.integers(1, n, CALIBRATION_PAIRS)) % n  # never i itself
    d = np.linalg.norm(x[i] - x[j], axis=1)
    return d[d > 0]  # identical rows (exact duplicates in the data) are repeats, not steps
