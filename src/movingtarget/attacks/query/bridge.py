"""The bridge: a synchronous query-based attack as an arena adversary.

A query-based black-box attack (ART's HopSkipJump, Square, ...) calls ``predict`` many
times inside one ``generate`` and expects an answer each time. The arena instead asks
its adversaries for queries (``propose``) and hands back answers (``observe``). The
bridge joins the two with a worker thread: the worker runs the attack; its ``predict``
hands the batch to the arena (the next ``propose`` returns it) and blocks until
``observe`` delivers the defense's answers. So every query the attack makes goes
through the defense at its place on the timeline, interleaved with benign traffic,
counted against the budget ``m`` and written to the event log.

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

When the budget is spent the arena calls :meth:`QueryAdversary.close`: the worker's
pending ``predict`` raises :class:`BudgetSpent` (a ``BaseException``, so an attack's
``except Exception`` does not swallow it) and the thread is joined.
"""

from __future__ import annotations

import inspect
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN
from movingtarget.attacks.base import NO_TARGET, PoolAdversary, Proposal
from movingtarget.attacks.perturb.estimators import Refused
from movingtarget.errors import ConfigError

#: ``predict(x) -> scores``: what an attack function calls to ask the defense.
Predict = Callable[[NDArray[np.float32]], NDArray[np.float32]]

ABSTAIN_RULES = ("raise", "class", "uniform")

#: Seconds ``close`` waits for the worker thread to end.
JOIN_TIMEOUT = 10.0

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
        self._requests: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._replies: queue.Queue[NDArray[np.int64] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._finished = False
        # the worker's request being answered: its rows, sources, answers so far
        self._pending: NDArray[np.float32] | None = None
        self._pending_source: NDArray[np.int64] = np.zeros(0, np.int64)
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
        """Whether the worker thread is running."""
        return self._thread is not None and self._thread.is_alive()

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
        end = min(self._offset + limit, len(self._pending))
        x = self._pending[self._offset : end]
        src = self._pending_source[self._offset : end]
        p = self._proposal(src, x)
        p.noisy = np.any(x.reshape(len(x), -1) != self.pool_x[src].reshape(len(x), -1), axis=1)
        return p

    def observe(self, labels: NDArray[np.int64]) -> None:
        if self._last is None or len(labels) != len(self._last):
            raise ValueError("observe() must get one answer per proposed query")
        if self._pending is None:
            return  # fallback queries: nobody is waiting for them
        self._got.append(np.asarray(labels, np.int64).copy())
        self._offset += len(labels)
        if self._offset >= len(self._pending):
            answers = np.concatenate(self._got)
            self._pending, self._got, self._offset = None, [], 0
            self._replies.put(answers)

    def close(self) -> None:
        """Stop the worker (the budget is spent): its pending ask raises
        :class:`BudgetSpent`; waits for the thread to end."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._replies.put(None)
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError(f"{self.name}: the attack thread did not stop")

    def _next_request(self) -> None:
        if self._finished:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"{self.name}-attack")
            self._thread.daemon = True
            self._thread.start()
        while True:
            try:
                kind, payload = self._requests.get(timeout=1.0)
                break
            except queue.Empty:
                if not self.alive:
                    raise RuntimeError(
                        f"{self.name}: the attack thread ended unexpectedly"
                    ) from None
        if kind == "ask":
            self._pending, self._pending_source = payload
        elif kind == "error":
            self._finished = True
            raise payload
        else:
            self._finished = True

    # -- the attack's side (worker thread) ----------------------------------------------
    def _work(self) -> None:
        try:
            n = len(self.pool_y)
            rounds = 0
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
            self._requests.put(("done", None))
        except BudgetSpent:
            pass
        except BaseException as exc:  # handed to the arena's thread
            self._requests.put(("error", exc))

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
        x = np.ascontiguousarray(x, dtype=np.float32).reshape((-1, *self.pool_x.shape[1:]))
        labels = self._ask(x)
        return self._scores(x, labels)

    def _ask(self, x: NDArray[np.float32]) -> NDArray[np.int64]:
        n = len(x)
        self.asked += n
        flat = x.reshape(n, -1)
        labels = np.full(n, ABSTAIN, np.int64)
        if self.cache:
            keys = [row.tobytes() for row in flat]
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
        else:
            send = list(range(n))
        if send:
            rows = np.asarray(send, np.int64)
            answers = self._send(x[rows])
            labels[rows] = answers
            if self.cache:
                for i, a in zip(send, answers.tolist(), strict=True):
                    self._answers[keys[i]] = a
        if self.cache:
            labels = np.array([self._answers[k] for k in keys], np.int64)
        return labels

    def _send(self, x: NDArray[np.float32]) -> NDArray[np.int64]:
        # only a query that needs the defense stops at the budget: answers already in
        # hand (the cache, the last reply) still reach the attack, so where it stops
        # does not depend on how the two threads are scheduled
        if self._stop.is_set():
            raise BudgetSpent
        self._requests.put(("ask", (x, self._attribute(x))))
        answers = self._replies.get()
        if answers is None:
            raise BudgetSpent
        self.sent += len(x)
        return answers

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
        out = np.zeros((n, self.n_classes), np.float32)
        refused = labels == ABSTAIN
        answered = np.flatnonzero(~refused)
        out[answered, labels[answered]] = 1.0
        if refused.any():
            self.refusals += int(refused.sum())
            if self.on_abstain == "raise":
                raise Refused(f"the defense abstained on {int(refused.sum())} of {n} queries")
            if self.on_abstain == "uniform":
                out[refused] = 1.0 / self.n_classes
            else:
                if self.abstain_class is not None:
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
