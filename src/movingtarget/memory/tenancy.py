"""A memory shared by many tenants (API keys) that keeps them apart where it can.

A global memory is what catches the many-account attacker, who spreads repeats of one
input over several keys. Shared naively, it is also an oracle and a lever: a ``repeat``
answer tells any key that *some other key* sent that input, one key can pre-submit
inputs other users will send so that they are refused, and one key's flood of distinct
inputs evicts everybody's history from a bounded memory. :class:`TenantMemory` answers
"has this been seen?" under a :class:`TenantPolicy` instead:

* **Own history.** Each key has its own memory (its own namespace, its own share of the
  capacity): a key's repeat of its own input is always caught, and no other key's
  traffic can evict that key's entries.
* **Shared pool, for untrusted keys only.** The first time a key sends an input, the
  input is counted once for that key in a shared pool, so the pool's count is the
  number of *distinct keys* that sent it. An untrusted key's query is a cross-key repeat
  when at least ``quorum`` *other* keys sent it before: one key alone can neither learn
  whether another key sent an input nor get another key refused; that takes ``quorum``
  colluding keys, and a many-account attacker gets at most ``quorum`` answers per input.
* **Trusted keys** (named by the operator) are held to their own history only and never
  write to the shared pool: nothing any key sends reveals what a trusted key sent, and
  nothing any key sends gets a trusted key refused.

Entries expire ``ttl`` after first seen, and each memory evicts exactly its excess
beyond its capacity after each batch, oldest first-seen first (see
:mod:`movingtarget.memory.stores.inprocess`), so the whole memory is bounded by ``key_capacity``
per active key plus ``shared_capacity``, and no batch pays for evicting a whole share.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from movingtarget.errors import ConfigError
from movingtarget.memory.stores.base import Store

#: Opens one memory: ``open(name, capacity) -> Store`` (``name``: letters, digits, ``_``).
StoreOpener = Callable[[str, "int | None"], Store]


@dataclass
class TenantPolicy:
    """Who shares what in a :class:`TenantMemory`.

    Parameters
    ----------
    quorum:
        An untrusted key's query is a cross-key repeat once at least this many *other*
        keys sent it before (``0``: never; each key is held to its own history only).
    trusted:
        Client ids (key ids) held to their own history only, and never shown to others.
    key_capacity, shared_capacity:
        Entries each key's own memory and the shared pool keep (``None``: unbounded).

    Examples
    --------
    >>> TenantPolicy(quorum=2, trusted={7}).is_trusted(7)
    True
    >>> TenantPolicy(quorum=-1)
    Traceback (most recent call last):
    ...
    movingtarget.errors.ConfigError: cross-key quorum must be an integer >= 0, got -1
    """

    quorum: int = 2
    trusted: set[int] = field(default_factory=set)
    key_capacity: int | None = None
    shared_capacity: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.quorum, int) or self.quorum < 0:
            raise ConfigError(f"cross-key quorum must be an integer >= 0, got {self.quorum!r}")
        for name in ("key_capacity", "shared_capacity"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        self._lock = threading.Lock()

    def is_trusted(self, client: int) -> bool:
        """Whether ``client`` is held to its own history only."""
        return client in self.trusted

    def set_trusted(self, client: int, trusted: bool) -> None:
        """Mark ``client`` trusted or not (the gateway does, from each request's key)."""
        with self._lock:
            if trusted:
                self.trusted.add(client)
            else:
                self.trusted.discard(client)

    def trusted_mask(self, clients: NDArray[np.int64]) -> NDArray[np.bool_]:
        """True where a query comes from a trusted client."""
        with self._lock:
            ids = np.fromiter(self.trusted, dtype=np.int64, count=len(self.trusted))
        return np.isin(clients, ids)

    def describe(self) -> str:
        """One line for the start-up banner (no key names: ids are counted only)."""
        cross = "never" if self.quorum == 0 else f"once {self.quorum} other key(s) sent the input"
        return (
            f"each key's own history (<= {_bound(self.key_capacity)} entries per key) always; "
            f"cross-key repeats {cross} (<= {_bound(self.shared_capacity)} entries shared)"
        )


def _bound(n: int | None) -> str:
    return "unbounded" if n is None else f"{n:,}"


class TenantMemory:
    """A multi-tenant memory: each key's own history plus a shared pool of distinct keys.

    ``observe_from(keys, clients, now)`` records a batch in arrival order and returns,
    per key, a count that is positive when the query must be treated as a repeat under
    the policy (see the module docstring). Memories open lazily, one per key seen, through
    ``opener`` (the same back end for all: in this process, SQLite or Redis).

    Examples
    --------
    >>> from movingtarget.memory.stores.inprocess import InProcessStore
    >>> mem = TenantMemory(lambda name, cap: InProcessStore(capacity=cap), TenantPolicy(quorum=1))
    >>> x = np.array([42], np.uint64)
    >>> mem.observe_from(x, np.array([1]), np.array([0])).tolist()  # key 1 sends it
    [0]
    >>> mem.observe_from(x, np.array([2]), np.array([1])).tolist()  # key 2: seen by 1 other
    [1]
    >>> mem.observe_from(x, np.array([1]), np.array([2])).tolist()  # key 1: its own repeat
    [1]
    """

    def __init__(self, opener: StoreOpener, policy: TenantPolicy) -> None:
        self.opener = opener
        self.policy = policy
        self._own: dict[int, Store] = {}
        self._shared: Store | None = None
        self._lock = threading.Lock()

    def _own_store(self, client: int) -> Store:
        with self._lock:
            store = self._own.get(client)
            if store is None:
                # ids are non-negative key ids in the gateway; arena ids may be any int
                name = f"k{client}" if client >= 0 else f"kn{-client}"
                store = self.opener(name, self.policy.key_capacity)
                self._own[client] = store
            return store

    @property
    def shared(self) -> Store:
        """The shared pool (opened on first use)."""
        with self._lock:
            if self._shared is None:
                self._shared = self.opener("shared", self.policy.shared_capacity)
            return self._shared

    def observe_from(
        self, keys: NDArray[np.uint64], clients: NDArray[np.int64], now: NDArray[np.int64]
    ) -> NDArray[np.int64]:
        """Record ``keys`` sent by ``clients`` at ``now``; positive where each is a repeat."""
        keys = np.asarray(keys, dtype=np.uint64)
        clients = np.asarray(clients, dtype=np.int64)
        now = np.asarray(now, dtype=np.int64)
        if not len(keys) == len(clients) == len(now):
            raise ValueError(
                f"observe_from: {len(keys)} keys, {len(clients)} clients, {len(now)} times"
            )
        own = np.zeros(len(keys), dtype=np.int64)
        # each key's queries keep their arrival order inside its own memory
        for client in np.unique(clients):
            at = np.flatnonzero(clients == client)
            own[at] = self._own_store(int(client)).observe(keys[at], now[at])
        out = own.copy()
        if self.policy.quorum == 0:
            return out
        # first sends of untrusted keys, in arrival order: the pool's prior count is the
        # number of distinct other keys that sent the input before
        first = np.flatnonzero((own == 0) & ~self.policy.trusted_mask(clients))
        if len(first):
            others = self.shared.observe(keys[first], now[first])
            out[first] = np.where(others >= self.policy.quorum, others, 0)
        return out

    def observe(self, keys: NDArray[np.uint64], now: NDArray[np.int64]) -> NDArray[np.int64]:
        """As one anonymous client (the :class:`Store` interface, for callers without
        client ids)."""
        return self.observe_from(keys, np.zeros(len(keys), dtype=np.int64), now)

    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        """Distinct keys that sent each of ``keys`` (the shared pool; records nothing)."""
        return self.shared.lookup(keys)

    def clear(self) -> None:
        """Forget every memory this object has opened."""
        for store in self._opened():
            store.clear()

    def _opened(self) -> Iterable[Store]:
        with self._lock:
            stores = list(self._own.values())
            if self._shared is not None:
                stores.append(self._shared)
        return stores

    def __len__(self) -> int:
        """Entries held, over every memory opened here (own histories and the pool)."""
        return sum(len(s) for s in self._opened())

    @property
    def keys_seen(self) -> int:
        """How many keys have an own memory opened here."""
        return len(self._own)


def observe_from(
    store: Store | TenantMemory,
    keys: NDArray[np.uint64],
    clients: NDArray[np.int64],
    now: NDArray[np.int64],
) -> NDArray[np.int64]:
    """Prior counts of ``keys`` in ``store``: per tenant for a :class:`TenantMemory`, as
    one memory otherwise (what the memory mechanisms call)."""
    if isinstance(store, TenantMemory):
        return store.observe_from(keys, clients, now)
    return store.observe(keys, now)
