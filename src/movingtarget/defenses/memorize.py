"""Exact memorization: the "hello world" dynamic defense.

Remember every query; on a repeat, ABSTAIN (``on_repeat="abstain"``) or answer a
uniformly random class (``on_repeat="random"``). Against the test set attack this
caps ``r~`` at about the natural error ``r``.
"""

from __future__ import annotations

from movingtarget.answers import ABSTAIN, Reason
from movingtarget.defenses.base import Context, uniform_classes
from movingtarget.errors import ConfigError
from movingtarget.memory.fingerprints.exact import ExactFingerprint, Fingerprint
from movingtarget.memory.stores import InProcessStore, Store
from movingtarget.memory.stores.redaction import redact
from movingtarget.memory.stores.urls import open_store
from movingtarget.memory.tenancy import observe_from

_REPEAT, _REPEAT_RANDOM = int(Reason.REPEAT), int(Reason.REPEAT_RANDOM)

ON_REPEAT = ("abstain", "random")


class Memorize:
    """Gate that catches exact repeats of earlier queries (from any client).

    Parameters
    ----------
    on_repeat:
        ``"abstain"`` or ``"random"`` (a uniformly random class).
    store:
        Where fingerprints live: a :class:`Store`, or a store URL such as
        ``sqlite:///memory.db`` or ``redis://host:6379/0`` (default: in this process).
    fingerprint:
        How queries are keyed (default: :class:`ExactFingerprint`).

    Examples
    --------
    >>> Memorize(on_repeat="random").describe()
    'memorize(on_repeat=random)'
    >>> Memorize(store="memory://?capacity=1000").describe()
    'memorize(on_repeat=abstain, store=memory://?capacity=1000)'
    """

    role = "gate"

    def __init__(
        self,
        on_repeat: str = "abstain",
        *,
        store: Store | str | None = None,
        fingerprint: Fingerprint | None = None,
        secret: bytes | str | None = None,
    ) -> None:
        if on_repeat not in ON_REPEAT:
            raise ConfigError(f"memorize: on_repeat must be one of {ON_REPEAT}, got {on_repeat!r}")
        self.on_repeat = on_repeat
        # a URL (from a config's text) is kept, so describe() names the same store
        self.store_url = redact(store) if isinstance(store, str) else None
        if isinstance(store, str):
            store = open_store(store)
        self.store: Store = store if store is not None else InProcessStore()
        self.fingerprint: Fingerprint = (
            fingerprint if fingerprint is not None else ExactFingerprint(secret)
        )

    def __call__(self, ctx: Context) -> None:
        keys = self.fingerprint.fingerprint(ctx.x)
        repeat = observe_from(self.store, keys, ctx.clients, ctx.times) > 0
        if not repeat.any():
            return
        # an earlier gate (a rate limit) keeps its decision
        repeat &= ctx.answers.undecided_mask
        if self.on_repeat == "abstain":
            ctx.answers.labels[repeat] = ABSTAIN
            ctx.answers.reasons[repeat] = _REPEAT
        else:
            ctx.answers.labels[repeat] = uniform_classes(ctx.rng, ctx.n_classes, int(repeat.sum()))
            ctx.answers.reasons[repeat] = _REPEAT_RANDOM

    def reset(self) -> None:
        """Forget every remembered query."""
        self.store.clear()

    def describe(self) -> str:
        if self.store_url is None:
            return f"memorize(on_repeat={self.on_repeat})"
        return f"memorize(on_repeat={self.on_repeat}, store={self.store_url})"
