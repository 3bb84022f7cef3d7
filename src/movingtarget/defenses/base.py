"""A defense: a model wrapped in a visible stack of mechanisms.

A defense answers a *batch* of queries, each with its client id and arrival time,
in arrival order, and may keep state between batches. Each mechanism has one job
and sees the answers that the mechanisms before it gave:

* a *gate* placed before the decision (rate limit, memorization) may decide some
  queries itself (ABSTAIN, or a random class); the model never decides those;
* the *decision* (``argmax`` or ``sample``) answers every query still undecided;
* a *filter* placed after the decision (confidence threshold) may turn model
  answers into ABSTAIN.

The reason on each answer names the mechanism that decided it.

A mechanism that changes the model at given arrival times (the continual refresh) has
an optional member ``cuts(times)``: positions in the batch where it needs a new part;
the defense then answers the batch part by part, each after the change it arrived to.

A mechanism that learns from labels (the correction memory) has two optional
members: ``ask_on``, the reason codes that make a query troubling (the defense then
marks those queries in ``Answers.ask``), and ``learn(x, y, times)``, which
:meth:`Defense.learn` calls with a labeler's answers (see
:mod:`movingtarget.defenses.labeling`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import Answers
from movingtarget.errors import ConfigError, InputError
from movingtarget.models.base import Model

if TYPE_CHECKING:
    from movingtarget.defenses.repair import GatedUpdate, RepairRecord


@dataclass
class Context:
    """What a mechanism sees for one batch: the queries, the answers so far, the model.

    Examples
    --------
    >>> from movingtarget.answers import Answers
    >>> class Half:
    ...     n_classes = 2
    ...     def predict_proba(self, x):
    ...         return np.tile([0.5, 0.5], (len(x), 1))
    >>> ctx = Context(np.zeros((3, 2), np.float32), np.zeros(3, np.int64), np.arange(3),
    ...               Answers.undecided(3), Half(), np.random.default_rng(0))
    >>> ctx.n_classes, ctx.proba.shape
    (2, (3, 2))
    """

    x: NDArray[np.float32]
    clients: NDArray[np.int64]
    times: NDArray[np.int64]
    answers: Answers
    model: Model
    rng: np.random.Generator
    _proba: NDArray[np.float64] | None = field(default=None, repr=False)

    @property
    def n_classes(self) -> int:
        """Number of classes ``k``."""
        return int(self.model.n_classes)

    @property
    def proba(self) -> NDArray[np.float64]:
        """The model's probabilities for the whole batch, computed once, on first use."""
        if self._proba is None:
            self._proba = np.asarray(self.model.predict_proba(self.x), dtype=np.float64)
        return self._proba


@runtime_checkable
class Mechanism(Protocol):
    """One job in a defense. ``role`` is ``"gate"``, ``"decision"`` or ``"filter"``.

    Examples
    --------
    A gate that abstains on every query from client 7:

    >>> from movingtarget.answers import ABSTAIN
    >>> class Block7:
    ...     role = "gate"
    ...     def __call__(self, ctx):
    ...         ctx.answers.labels[ctx.clients == 7] = ABSTAIN
    ...         ctx.answers.reasons[ctx.clients == 7] = 7
    ...     def reset(self): pass
    ...     def describe(self): return "block7"
    >>> isinstance(Block7(), Mechanism)
    True
    """

    role: str

    def __call__(self, ctx: Context) -> None:
        """Inspect ``ctx`` and change ``ctx.answers`` in place."""
        ...

    def reset(self) -> None:
        """Forget what was learned since deployment (the model lifetime ended)."""
        ...

    def describe(self) -> str:
        """Short text with the parameters, e.g. ``memorize(on_repeat=abstain)``."""
        ...


_ORDER = {"gate": 0, "decision": 1, "filter": 2}


def uniform_classes(rng: np.random.Generator, k: int, n: int) -> NDArray[np.int64]:
    """``n`` classes drawn uniformly from ``k`` (``floor(u * k)``: exact to 2^-53, and
    several times cheaper than ``Generator.integers`` on the one-query hot path)."""
    return (rng.random(n) * k).astype(np.int64)


def validate_queries(x: object) -> NDArray[np.float32]:
    """Queries as a float32 array ``(n, ...)``; an :class:`InputError` names the problem."""
    if isinstance(x, np.ndarray) and x.dtype == np.float32:
        arr = x  # the arena's own queries: skip the dtype checks
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise InputError(f"queries are not a numeric array: {exc}") from None
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
        ):
            raise InputError(f"queries must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.float32, copy=False)
    if arr.ndim < 2:
        raise InputError(f"queries must be a batch (n, features...), got shape {arr.shape}")
    # one float64 sum detects NaN and infinity (they propagate; float32 values can't
    # overflow a float64 sum) without a boolean temporary the size of the batch
    if not math.isfinite(float(arr.sum(dtype=np.float64))):
        raise InputError("queries hold NaN or infinite values")
    return arr


class Defense:
    """A model behind an ordered stack of mechanisms, answering batches of queries.

    Parameters
    ----------
    model:
        Any :class:`~movingtarget.models.base.Model`.
    mechanisms:
        Gates, then exactly one decision, then filters.
    name:
        The composition's name, used in reports.
    seed:
        Seeds the defense's own randomness (sampling, random answers).
    update:
        Optionally a :class:`~movingtarget.defenses.repair.GatedUpdate`: labels given
        to :meth:`learn` also update the model, kept only while a canary set's accuracy
        holds; every update is recorded in ``repairs``.

    Examples
    --------
    >>> import numpy as np
    >>> from movingtarget.defenses import Defense, Argmax, Memorize
    >>> class Half:
    ...     n_classes = 2
    ...     def predict_proba(self, x):
    ...         return np.tile([0.3, 0.7], (len(x), 1))
    >>> d = Defense(Half(), [Memorize(on_repeat="abstain"), Argmax()], name="memorize-abstain")
    >>> d.answer(np.zeros((2, 3))).labels.tolist()   # the second is a repeat
    [1, -1]
    """

    def __init__(
        self,
        model: Model,
        mechanisms: Sequence[Mechanism],
        *,
        name: str = "",
        seed: int = 0,
        update: GatedUpdate | None = None,
    ) -> None:
        roles = [m.role for m in mechanisms]
        if roles.count("decision") != 1:
            raise ConfigError(
                f"a defense needs exactly one decision mechanism (argmax or sample), got {roles}"
            )
        order = [_ORDER.get(r, -1) for r in roles]
        if -1 in order or order != sorted(order):
            raise ConfigError(
                "mechanisms must be ordered gates, then the decision, then filters; got "
                + " > ".join(m.describe() for m in mechanisms)
            )
        for mechanism in mechanisms:
            # a mechanism that needs a kind of model (moving-target: a pool) says so now,
            # not at the first query
            check = getattr(mechanism, "check_model", None)
            if check is not None:
                check(model)
        self.model = model
        self.mechanisms = list(mechanisms)
        self.name = name or self.describe()
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._clock = 0
        # reasons that ask for a label: the union of what the learning mechanisms name
        if update is not None:
            update.check(model)
        self.update = update
        #: One record per gated model update (see :mod:`movingtarget.defenses.repair`).
        self.repairs: list[RepairRecord] = []
        askers = [*self.mechanisms, *([update] if update is not None else [])]
        codes = sorted(set().union(*(getattr(m, "ask_on", ()) for m in askers)))
        self._ask_codes = np.array(codes, np.uint8) if codes else None
        self._learners = [m for m in self.mechanisms if callable(getattr(m, "learn", None))]
        self._cutters = [
            m.cuts  # type: ignore[attr-defined]
            for m in self.mechanisms
            if callable(getattr(m, "cuts", None))
        ]
        #: Labels given to :meth:`learn` since the defense was built (resets keep it).
        self.labels_learned = 0

    @property
    def n_classes(self) -> int:
        """Number of classes ``k`` of the model."""
        return int(self.model.n_classes)

    def describe(self) -> str:
        """The composition in order, e.g. ``memorize(on_repeat=abstain) > argmax``."""
        return " > ".join(m.describe() for m in self.mechanisms)

    def answer(
        self,
        x: object,
        clients: NDArray[np.int64] | Sequence[int] | None = None,
        times: NDArray[np.int64] | None = None,
    ) -> Answers:
        """Answer a batch of queries in arrival order.

        ``clients`` defaults to client 0 for every query; ``times`` to the defense's own
        arrival counter. Where a mechanism learns from labels (``ask_on``), the answers'
        ``ask`` column marks the queries whose final reason asks for a label.
        """
        xs = validate_queries(x)
        n = len(xs)
        if clients is None:
            client_ids = np.zeros(n, dtype=np.int64)
        else:
            client_ids = np.asarray(clients, dtype=np.int64)
            if client_ids.shape != (n,):
                raise InputError(f"{n} queries but {client_ids.shape} client ids")
        if times is None:
            times = np.arange(self._clock, self._clock + n, dtype=np.int64)
        self._clock = int(times[-1]) + 1 if n else self._clock
        times = np.asarray(times, np.int64)
        answers = Answers.undecided(n)
        # a mechanism that changes the model at given times (refresh) cuts the batch
        # there, so each part is answered by the model as it stands at its arrival
        cuts = sorted({int(c) for f in self._cutters for c in f(times) if 0 < c < n})
        for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
            part = slice(lo, hi)
            whole = lo == 0 and hi == n
            ctx = Context(
                xs if whole else xs[part],
                client_ids if whole else client_ids[part],
                times if whole else times[part],
                answers if whole else Answers.undecided(hi - lo),
                self.model,
                self._rng,
            )
            if hi > lo:
                for mechanism in self.mechanisms:
                    mechanism(ctx)
            if not whole:
                answers.labels[part] = ctx.answers.labels
                answers.reasons[part] = ctx.answers.reasons
        if self._ask_codes is not None:
            answers.ask = np.isin(answers.reasons, self._ask_codes)
        return answers

    @property
    def learns(self) -> bool:
        """Whether any mechanism learns from labels (and so asks for them)."""
        return bool(self._learners) or self.update is not None

    def learn(
        self,
        x: object,
        y: NDArray[np.int64] | Sequence[int],
        times: NDArray[np.int64] | None = None,
    ) -> int:
        """Give the true classes ``y`` of inputs ``x`` (a labeler's answers to asked
        queries) to every mechanism that learns from labels; returns how many labels
        were given (0 for a defense without such a mechanism)."""
        xs = validate_queries(x)
        ys = np.asarray(y, dtype=np.int64)
        if ys.shape != (len(xs),):
            raise InputError(f"{len(xs)} labeled inputs but labels of shape {ys.shape}")
        if len(ys) and (int(ys.min()) < 0 or int(ys.max()) >= self.n_classes):
            raise InputError(f"labels must be classes in [0, {self.n_classes}), got {ys.tolist()}")
        if not self.learns or not len(ys):
            return 0
        for mechanism in self._learners:
            mechanism.learn(xs, ys, times)  # type: ignore[attr-defined]
        if self.update is not None:
            self.repairs.append(self.update.update(self.model, xs, ys))
        self.labels_learned += len(ys)
        return len(ys)

    def reset(self) -> None:
        """Forget all dynamic state: a new deployment of the same model."""
        for mechanism in self.mechanisms:
            mechanism.reset()
        if self.update is not None:
            self.update.restore(self.model)  # the model as deployed, before any update
        self._clock = 0
