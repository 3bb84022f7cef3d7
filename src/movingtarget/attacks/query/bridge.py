"""The bridge: a synchronous query-based attack as an arena adversary.

A query-based black-box attack (ART's HopSkipJump, Square, ...) calls ``predict`` many
times inside one ``generate`` and expects an answer each time. The arena instead asks
its adversaries for queries (``propose``) and hands back answers (``observe``). The
bridge joins the two with a coroutine (a `greenlet <https://greenlet.readthedocs.io>`_):
``propose`` switches into the attack, which runs until its ``predict`` is called and
switches back with the batch; the next ``propose`` resumes it with the answers
``observe`` collected. So every query the attack makes goes through the defense at its
place on the timeline, interleaved with benign traffic, counted against the budget
``m`` and written to the event log. It is one thread taking turns, not two threads
handing work over: a switch costs about a microsecond where a thread hand-off cost
over a hundred, so a one-input ask pays little more than the defense's answer, and
the interleaving is deterministic by construction.

The attack sees the defense as a scores function (``(n, k)`` float32): the one-hot
vector of the class it answered (the arena answers classes, never probabilities), and
for an ABSTAIN what ``on_abstain`` says:

``"raise"``
    :class:`~movingtarget.attacks.perturb.estimators.Refused` is raised inside the
    attack; the bridge catches it, abandons that source input and moves on to the next
    one. Measures an attacker who notices refusals and starts afresh elsewhere.
``"class"``
    The refusal reads as a class: ``abstain_class``, or (``None``, the default) the
    source input's own true class, i.e. "not fooled yet" (for a targeted attack: not
    the target). Measures an attacker who treats a refusal as a failed probe.
``"uniform"``
    A uniform score vector. ART reads scores by argmax, so a refusal reads as
    **class 0**: an attack on a class-0 input takes it for "not fooled", on any other
    input for a success (Square then returns the clean input as its example). Measures a
    naive attacker who does not know refusals exist.

With ``cache=True`` (the default) the attacker keeps every answer it got and never sends
an input it already asked about (byte-identical float32 rows): ART asks about the clean
input twice in a row (``generate`` predicts it before the attack loop, and again inside
it), and an exact memory would refuse that second ask at query 2. The cache is the fair
measure: it charges the defense only for inputs the attacker genuinely needed answered.
``cache=False`` sends every ask, as ART makes it.

When the budget is spent the arena calls :meth:`QueryAdversary.close`: the attack's
pending ``predict`` raises :class:`BudgetSpent` (a ``BaseException``, so an attack's
``except Exception`` does not swallow it) and the attack ends.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from greenlet import greenlet
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN
from movingtarget.attacks.base import NO_TARGET, PoolAdversary, Proposal
from movingtarget.attacks.perturb.estimators import Refused
from movingtarget.errors import ConfigError

#: ``predict(x) -> scores``: what an attack function calls to ask the defense.
Predict = Callable[[NDArray[np.float32]], NDArray[np.float32]]

ABSTAIN_RULES = ("raise", "class", "uniform")

#: Asks in a row answered from the cache alone after which an attack call is abandoned:
#: an attack that reads every refusal as "not fooled" can loop on inputs it already
#: asked about (HopSkipJump halves its step until the step is zero), never reaching
#: the arena again.
STALL_LIMIT = 2000


class Stalled(RuntimeError):
    """An attack call kept asking only what the cache already answered."""


class BudgetSpent(BaseException):
    """Raised inside a bridged attack's ``predict`` when the arena stopped asking."""


@dataclass(frozen=True)
class Sources:
    """The source inputs of one attack call: pool indices, inputs, classes, targets.

    ``target`` holds :data:`~movingtarget.attacks.base.NO_TARGET` for an untargeted attack.
    """

    index: NDArray[np.int64]
    x: NDArray[np.float32]
    y: NDArray[np.int64]
    target: NDArray[np.int64]
    seed: int

    @property
    def targeted(self) -> bool:
        """Whether the attack aims at a class."""
        return bool(len(self.target)) and int(self.target[0]) != NO_TARGET


#: ``attack(predict, sources)``, or ``attack(predict)`` for one that knows its own inputs.
AttackFn = Callable[..., Any]


class QueryAdversary(PoolAdversary):
    """Any synchronous query-based attack, run on the arena's timeline.

    ``attack`` is called once per batch of ``per_call`` source inputs (a seeded order of
    the pool, again in a new order when the pool is used up) as
    ``attack(predict, sources)`` (see :class:`Sources`), or ``attack(predict)`` when it
    takes one parameter. Its return value is ignored: what counts is what the defense
    answered. Queries are attributed to the nearest source input of the call. When a
    whole pass over the pool asked nothing new (every ask answered by the cache), the
    attack is exhausted and the rest of the budget re-sends pool inputs unchanged.

    Parameters
    ----------
    on_abstain:
        ``"raise"``, ``"class"`` or ``"uniform"``: what an ABSTAIN reads as (module docs).
    abstain_class:
        With ``on_abstain="class"``: the class a refusal reads as; ``None``: the source's.
    cache:
        Never re-send an input already asked; answer it from the attacker's cache.
    per_call:
        Source inputs per attack call.

    Examples
    --------
    >>> import numpy as np
    >>> def probe(predict, sources):          # ask about each source and a shifted copy
    ...     predict(sources.x); predict(sources.x); predict(sources.x + 0.5)
    >>> adv = QueryAdversary(np.zeros((2, 3), np.float32), np.array([0, 1]), 2, attack=probe)
    >>> p = adv.propose(10); len(p)           # the second ask came from the cache
    1
    >>> adv.observe(np.array([0])); len(adv.propose(10)), p.noisy.tolist()
    (1, [False])
    >>> adv.close(); adv.alive
    False
    """

    name = "query"

    def __init__(
        self,
        pool_x: NDArray[np.float32],
        pool_y: NDArray[np.int64],
        n_classes: int,
        *,
        attack: AttackFn,
        seed: int = 0,
        target: int | None = None,
        on_abstain: str = "raise",
        abstain_class: int | None = None,
        cache: bool = True,
        per_call: int = 1,
        max_commit: int = 1024,
    ) -> None:
        super().__init__(pool_x, pool_y, n_classes, seed=seed, target=target, max_commit=max_commit)
        if on_abstain not in ABSTAIN_RULES:
            raise ConfigError(
                f"{self.name}: on_abstain must be one of {', '.join(ABSTAIN_RULES)}, "
                f"got {on_abstain!r}"
            )
        if abstain_class is not None and not 0 <= int(abstain_class) < n_classes:
            raise ConfigError(f"{self.name}: abstain_class must be a class in [0, {n_classes})")
        if per_call < 1:
            raise ConfigError(f"{self.name}: per_call must be >= 1, got {per_call}")
        self.attack = attack
        self.on_abstain = on_abstain
        self.abstain_class = None if abstain_class is None else int(abstain_class)
        self.cache = bool(cache)
        self.per_call = int(per_call)
        self._seed = int(seed)
        self._takes_sources = _arity(attack) != 1
        # what the attacker learned: input bytes -> the defense's answer
        self._answers: dict[bytes, int] = {}
        #: Queries sent to the arena, asks the attack made (rows), asks answered from
        #: the cache, refusals seen, attack calls started, calls abandoned (``raise``).
        self.sent = 0
        self.asked = 0
        self.cached = 0
        self.refusals = 0
        self.calls = 0
        self.abandoned = 0
        # the attack's coroutine; the answers that resume it at the next ``propose``
        self._attack: greenlet | None = None
        self._reply: NDArray[np.int64] | None = None
        self._stop = False
        self._finished = False
        self._eye = np.eye(n_classes, dtype=np.float32)
        self._shape = self.pool_x.shape[1:]
        # the worker's request being answered: its rows, sources, answers so far
        self._pending: NDArray[np.float32] | None = None
        self._whole: Proposal | None = None
        self._got: list[NDArray[np.int64]] = []
        self._offset = 0
        self._current: Sources | None = None
        self._fallback = 0
        self._stalled = 0
        #: Attack calls abandoned because they asked only cached inputs (:class:`Stalled`).
        self.stalls = 0

    # -- the arena's side ---------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """Whether the attack has started and not ended."""
        return self._attack is not None and bool(self._attack) and not self._attack.dead

    def propose(self, limit: int, exactly: bool = False) -> Proposal:
        if exactly:
            raise ConfigError(
                f"{self.name}: a query-based attack sends what it asks, so it needs "
                "arena.adversary_batch = 0"
            )
        if self._pending is None:
            self._next_request()
        if self._pending is None:  # the attack has nothing more to ask: resend the pool
            idx = np.array([self._fallback % len(self.pool_y)], np.int64)
            self._fallback += 1
            return self._proposal(idx)
        whole = self._whole
        assert whole is not None
        if self._offset == 0 and limit >= len(whole):  # the common case: the whole ask
            self._last = whole
            return whole
        end = min(self._offset + limit, len(whole))
        part = slice(self._offset, end)
        p = Proposal(
            x=whole.x[part],
            source=whole.source[part],
            y_true=whole.y_true[part],
            target=whole.target[part],
            noisy=whole.noisy[part],
        )
        self._last = p
        return p

    def observe(self, labels: NDArray[np.int64]) -> None:
        if self._last is None or len(labels) != len(self._last):
            raise ValueError("observe() must get one answer per proposed query")
        if self._pending is None:
            return  # fallback queries: nobody is waiting for them
        labels = np.asarray(labels, np.int64)
        self._offset += len(labels)
        if self._offset == len(labels) == len(self._pending):  # answered in one round
            self._reply = labels
        else:
            self._got.append(labels.copy())
            if self._offset < len(self._pending):
                return
            self._reply = np.concatenate(self._got)
        self._pending, self._whole, self._got, self._offset = None, None, [], 0

    def close(self) -> None:
        """End the attack (the budget is spent): it gets the answers to its last ask,
        and its next ask that needs the defense raises :class:`BudgetSpent` inside it."""
        self._stop = True
        attack = self._attack
        if attack is not None and self.alive:
            reply, self._reply = self._reply, None
            if reply is not None:
                # the last answers still reach the attack (as a reply the attacker has in
                # hand would); its next query that needs the defense raises BudgetSpent
                attack.switch(reply)
            else:
                attack.throw(BudgetSpent)
            if not attack.dead:  # it caught BudgetSpent and asked again
                raise RuntimeError(f"{self.name}: the attack did not stop when its budget ended")

    def _next_request(self) -> None:
        if self._finished:
            return
        if self._attack is None:
            self._attack = greenlet(self._work)
        reply, self._reply = self._reply, None
        try:
            kind, payload = self._attack.switch(reply)  # runs the attack until it asks
        except BaseException:
            self._finished = True
            raise
        if kind == "ask":
            x, source = payload
            # the ask's event-log columns, once: the arena may take it in several rounds
            self._pending = x
            self._whole = self._proposal(source, x)
            self._whole.noisy = np.any(
                x.reshape(len(x), -1) != self.pool_x[source].reshape(len(x), -1), axis=1
            )
        else:
            self._finished = True

    # -- the attack's side (its coroutine) ------------------------------------------------
    def _work(self, _: Any = None) -> tuple[str, Any]:
        n = len(self.pool_y)
        rounds = 0
        try:
            while True:
                order = self.rng.permutation(n)
                sent_before = self.sent
                for start in range(0, n, self.per_call):
                    idx = np.sort(order[start : start + self.per_call]).astype(np.int64)
                    seed = int(
                        np.random.SeedSequence([self._seed, rounds, start]).generate_state(1)[0]
                    )
                    self._run_call(idx, seed)
                rounds += 1
                if self.sent == sent_before:
                    break  # a whole pass asked nothing new: the attack is exhausted
        except BudgetSpent:
            pass
        return ("done", None)

    def _run_call(self, idx: NDArray[np.int64], seed: int) -> None:
        sources = Sources(
            index=idx,
            x=self.pool_x[idx].copy(),
            y=self.pool_y[idx],
            target=np.full(len(idx), self.target, np.int64),
            seed=seed,
        )
        self._current = sources
        self.calls += 1
        state = np.random.get_state()
        np.random.seed(seed)  # ART's random attacks draw from numpy's global generator
        try:
            if self._takes_sources:
                self.attack(self.predict, sources)
            else:
                self.attack(self.predict)
        except Refused:
            self.abandoned += 1
        except Stalled:
            self.stalls += 1
        finally:
            np.random.set_state(state)

    def predict(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Ask the defense about ``x`` (blocks until the arena answers); one score row
        per input, an ABSTAIN mapped by ``on_abstain``. Called by the attack; raises
        :class:`BudgetSpent` once the budget is spent and ``x`` holds an input not in
        the cache."""
        if not (type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous):
            x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[1:] != self._shape:
            x = x.reshape((-1, *self._shape))
        labels = self._ask(x)
        return self._scores(x, labels)

    def _ask(self, x: NDArray[np.float32]) -> NDArray[np.int64]:
        n = len(x)
        self.asked += n
        if not self.cache:
            return self._send(x)
        # the attacker's cache: ask only rows it never asked before (once each)
        keys = [row.tobytes() for row in x.reshape(n, -1)]
        first: dict[bytes, int] = {}
        send = []
        for i, key in enumerate(keys):
            if key not in self._answers and key not in first:
                first[key] = i
                send.append(i)
        self.cached += n - len(send)
        if not send:
            self._stalled += 1
            if self._stalled > STALL_LIMIT:
                self._stalled = 0
                raise Stalled(f"{STALL_LIMIT} asks in a row were all answered from the cache")
        else:
            self._stalled = 0
            answers = self._send(x[np.asarray(send, np.int64)])
            for i, a in zip(send, answers.tolist(), strict=True):
                self._answers[keys[i]] = a
        return np.array([self._answers[k] for k in keys], np.int64)

    def _send(self, x: NDArray[np.float32]) -> NDArray[np.int64]:
        # only a query that needs the defense stops at the budget: answers already in
        # hand (the cache, the last reply) still reach the attack
        if self._stop:
            raise BudgetSpent
        assert self._attack is not None and self._attack.parent is not None
        x = x.copy()  # the event log keeps it; the attack may reuse its buffer
        answers = self._attack.parent.switch(("ask", (x, self._attribute(x))))
        self.sent += len(x)
        return np.asarray(answers, np.int64)

    def _attribute(self, x: NDArray[np.float32]) -> NDArray[np.int64]:
        """The source each query is built from: the nearest source of the current call."""
        src = self._current
        assert src is not None
        if len(src.index) == 1:
            return np.full(len(x), src.index[0], np.int64)
        a = x.reshape(len(x), -1).astype(np.float64)
        b = src.x.reshape(len(src.x), -1).astype(np.float64)
        d = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
        return src.index[d.argmin(axis=1)]

    def _scores(self, x: NDArray[np.float32], labels: NDArray[np.int64]) -> NDArray[np.float32]:
        n = len(labels)
        refused = labels == ABSTAIN
        if not refused.any():  # the common case: one one-hot row per answer
            return self._eye[labels]
        out = np.zeros((n, self.n_classes), np.float32)
        answered = np.flatnonzero(~refused)
        out[answered, labels[answered]] = 1.0
        self.refusals += int(refused.sum())
        if self.on_abstain == "raise":
            raise Refused(f"the defense abstained on {int(refused.sum())} of {n} queries")
        if self.on_abstain == "uniform":
            out[refused] = 1.0 / self.n_classes
        elif self.abstain_class is not None:
            out[refused, self.abstain_class] = 1.0
        else:  # the source's own class: "not fooled yet"
            rows = np.flatnonzero(refused)
            out[rows, self.pool_y[self._attribute(x[rows])]] = 1.0
        return out


def _arity(fn: Callable[..., Any]) -> int:
    """Positional parameters ``fn`` takes (2 when it cannot be told)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)
