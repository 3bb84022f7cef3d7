"""The adaptive attacker: it learns a stateful defense's match threshold from its
refusals, keeps its repeats just outside it, spreads them over accounts and hides them
among clean queries (issue 15, after OARS-style adaptive attacks on stateful defenses).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from movingtarget._passes import Passes
from movingtarget.answers import ABSTAIN
from movingtarget.attacks.base import PoolAdversary, Proposal
from movingtarget.errors import ConfigError

#: Phases of the attack.
EXPLORE, PROBE, EXPLOIT = "explore", "probe", "exploit"


class AdaptiveAttack(PoolAdversary):
    """The test set attack against a near-repeat memory, adapting to its refusals.

    1. **Explore**: send fresh pool items one at a time until one is a mistake (the
       natural test set search).
    2. **Probe**: binary-search the noise size of copies of that mistake between
       ``eps_low`` and ``eps_high`` (geometric midpoints, ``probes`` steps, ``probe_votes``
       copies per step): a copy answered ABSTAIN was caught (the noise is inside the
       defense's match threshold), one answered with a class was not. The smallest size
       seen uncaught is the learned threshold.
    3. **Exploit**: repeat the mistake with fresh noise of ``margin`` times the learned
       threshold, in runs that double (up to ``max_commit``) while every copy succeeds;
       a caught copy raises the threshold by ``margin``; after ``patience`` failed
       copies in a row the item is dropped and exploration resumes, the threshold kept
       (it belongs to the defense, not to the item).

    Every query goes out from one of ``accounts`` client ids, in turn (probes from
    account 0, so only it is burnt by them), against per-client rate limits and
    per-client state; and every probe or exploit query is hidden among ``cover`` clean
    pool items (the same seeded stream that exploration draws from, so none repeats
    before the pool is used up), in a random place among them. Cover queries count
    against the query budget (they lower ``r~``) and are what a benign client would send.
    Once the pool is used up, an item sent again (to explore or as cover) carries fresh
    noise just outside the learned threshold, so it is no exact or near repeat.

    Parameters
    ----------
    accounts:
        Client ids to spread queries over (>= 1; 1: the adversary's one id).
    cover:
        Clean queries around each probe or exploit query (>= 0).
    eps_low, eps_high:
        The noise sizes the threshold search starts between (0 < low < high).
    probes:
        Binary-search steps (>= 1).
    probe_votes:
        Copies sent per step; the step counts as caught when most were (>= 1).
    margin:
        How far above the learned threshold exploit noise goes (> 1).
    norm:
        ``"linf"`` (uniform noise in ``[-eps, eps]``) or ``"l2"`` (a random direction of
        length ``eps``), in input units.
    clip:
        Keep queries inside the pool's value range (True by default).
    patience:
        Consecutive failed copies tolerated before dropping an item.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((6, 4), dtype=np.float32); y = np.arange(6) % 2
    >>> a = AdaptiveAttack(x, y, 2, seed=0, accounts=3, cover=2)
    >>> p = a.propose(10); a.phase, len(p)
    ('explore', 1)
    >>> a.observe(1 - p.y_true)          # a mistake: the threshold search begins
    >>> p = a.propose(10); a.phase, len(p), int(p.noisy.sum()), p.account.tolist()
    ('probe', 3, 1, [0, 0, 0])
    >>> a.observe(np.where(p.noisy, -1, p.y_true))   # the copy was caught
    >>> a.eps_low > 1 / 255                           # the threshold lies higher
    True
    """

    name = "adaptive"

    def __init__(
        self,
        pool_x: NDArray[np.float32],
        pool_y: NDArray[np.int64],
        n_classes: int,
        *,
        seed: int = 0,
        target: int | None = None,
        accounts: int = 1,
        cover: int = 0,
        eps_low: float = 1 / 255,
        eps_high: float = 0.5,
        probes: int = 6,
        probe_votes: int = 1,
        margin: float = 1.25,
        norm: str = "linf",
        clip: bool = True,
        patience: int = 2,
        max_commit: int = 1024,
    ) -> None:
        super().__init__(pool_x, pool_y, n_classes, seed=seed, target=target, max_commit=max_commit)
        for field, value, low in (
            ("accounts", accounts, 1),
            ("cover", cover, 0),
            ("probes", probes, 1),
            ("probe_votes", probe_votes, 1),
            ("patience", patience, 1),
        ):
            if not (_is_int(value) and value >= low):
                raise ConfigError(
                    f"{self.name}: {field} must be an integer >= {low}, got {value!r}"
                )
        checks = [
            (
                0 < eps_low < eps_high,
                f"eps_low and eps_high must satisfy 0 < eps_low < eps_high, got "
                f"{eps_low!r}, {eps_high!r}",
            ),
            (margin > 1, f"margin must be > 1, got {margin!r}"),
            (norm in ("linf", "l2"), f"norm must be 'linf' or 'l2', got {norm!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{self.name}: {message}")
        self.accounts, self.cover = int(accounts), int(cover)
        self.eps_low, self.eps_high = float(eps_low), float(eps_high)
        self.probes, self.probe_votes = int(probes), int(probe_votes)
        self.margin, self.norm, self.clip = float(margin), norm, bool(clip)
        self.patience = int(patience)
        self._lo, self._hi = float(self.pool_x.min()), float(self.pool_x.max())
        self._passes = Passes(len(self.pool_y), self.rng)
        self.phase = EXPLORE
        #: The learned match threshold (None until the search ends; raised when caught).
        self.threshold: float | None = None
        #: What the binary search found (None until it ends; never raised after).
        self.searched: float | None = None
        self._steps = 0  # binary-search steps taken
        self._eps = 0.0  # noise size of the copies in flight
        self._item = -1
        self._commit = 1
        self._failures = 0
        self._turn = 0  # the next account, in turn
        self._attack = np.zeros(0, bool)  # which rows of the last proposal are copies
        self._sent = np.zeros(len(self.pool_y), bool)  # pool items already sent
        #: Probe and exploit queries sent so far (the rest is exploration and cover).
        self.copies_sent = 0

    # -- queries -------------------------------------------------------------------------

    def _noise(self, idx: NDArray[np.int64], eps: float) -> NDArray[np.float32]:
        base = self.pool_x[idx]
        n = len(idx)
        if self.norm == "linf":
            noise = self.rng.uniform(-eps, eps, size=base.shape)
        else:
            noise = self.rng.standard_normal(base.shape)
            flat = noise.reshape(n, -1)
            flat *= eps / np.linalg.norm(flat, axis=1, keepdims=True)
        out = base + noise.astype(np.float32)
        if self.clip:
            out = np.clip(out, self._lo, self._hi)
        return out.astype(np.float32)

    def _accounts(self, n: int, probe: bool) -> NDArray[np.int64] | None:
        if self.accounts == 1:
            return None
        if probe:
            return np.zeros(n, np.int64)
        out = (self._turn + np.arange(n, dtype=np.int64)) % self.accounts
        self._turn = int(out[-1] + 1) % self.accounts if n else self._turn
        return out

    def _copies(self, copies: int, limit: int, exactly: bool, probe: bool) -> Proposal:
        """``copies`` noisy copies of the item (fewer if ``limit`` is short), each in a
        random place among ``cover`` clean queries; exactly ``limit`` when ``exactly``."""
        group = self.cover + 1
        copies = max(1, min(copies, limit // group)) if not exactly else max(1, limit // group)
        n = limit if exactly else min(limit, copies * group)
        attack = np.zeros(n, bool)
        slots = np.arange(copies) * group + self.rng.integers(0, group, copies)
        attack[slots[slots < n]] = True
        if not attack.any():
            attack[self.rng.integers(0, n)] = True
        k = int(attack.sum())
        self.copies_sent += k
        idx = np.empty(n, np.int64)
        idx[attack] = self._item
        idx[~attack] = self._passes.take(n - k)
        x, resent = self._clean(idx, attack)
        x[attack] = self._noise(idx[attack], self._eps)
        p = Proposal(
            x=x,
            source=idx,
            y_true=self.pool_y[idx],
            target=np.full(n, self.target, np.int64),
            noisy=attack | resent,
            account=self._accounts(n, probe),
        )
        self._last, self._attack = p, attack
        return p

    def _clean(
        self, idx: NDArray[np.int64], skip: NDArray[np.bool_] | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """The pool inputs of ``idx`` (rows in ``skip`` aside), each sent as it is the
        first time; an item sent before again gets fresh noise just outside the learned
        threshold (once there is one), so it is no exact or near repeat either. Returns
        the inputs and which rows got noise."""
        x = self.pool_x[idx].copy()
        todo = np.ones(len(idx), bool) if skip is None else ~skip
        resent = todo & self._sent[idx]
        if self.threshold is not None and resent.any():
            x[resent] = self._noise(idx[resent], self.threshold * self.margin)
        else:
            resent[:] = False
        self._sent[idx[todo]] = True
        return x, resent

    def _probe_eps(self) -> float:
        return math.sqrt(self.eps_low * self.eps_high)

    def propose(self, limit: int, exactly: bool = False) -> Proposal:
        if self.phase == EXPLORE:
            idx = self._passes.take(limit if exactly else 1)
            x, resent = self._clean(idx)
            p = self._proposal(idx, x)
            p.noisy = resent
            p.account = self._accounts(len(idx), probe=False)
            self._attack = np.ones(len(idx), bool)
            return p
        if self.phase == PROBE:
            self._eps = self._probe_eps()
            return self._copies(self.probe_votes, limit, exactly, probe=True)
        assert self.threshold is not None
        self._eps = self.threshold * self.margin
        return self._copies(self._commit, limit, exactly, probe=False)

    # -- answers -------------------------------------------------------------------------

    def observe(self, labels: NDArray[np.int64]) -> None:
        wins = self._wins(labels)[self._attack]
        caught = np.asarray(labels)[self._attack] == ABSTAIN
        if self.phase == EXPLORE:
            if wins.any():
                assert self._last is not None
                self._item = int(self._last.source[self._attack][int(np.argmax(wins))])
                self._commit, self._failures = 1, 0
                self.phase = PROBE if self.threshold is None else EXPLOIT
            return
        if self.phase == PROBE:
            if 2 * int(caught.sum()) > len(caught):
                self.eps_low = self._eps  # caught: the threshold lies above
            else:
                self.eps_high = self._eps  # not caught: it lies at or below
            self._steps += 1
            if self._steps >= self.probes:
                self.threshold = self.searched = self.eps_high
                self.phase = EXPLOIT
            return
        assert self.threshold is not None
        if caught.any():
            self.threshold *= self.margin  # the defense reaches further than learned
        if wins.all():
            self._failures = 0
            self._commit = min(self._commit * 2, self.max_commit)
            return
        tail = len(wins) - 1 - int(np.flatnonzero(wins)[-1]) if wins.any() else len(wins)
        self._failures = tail if wins.any() else self._failures + tail
        self._commit = 1
        if self._failures >= self.patience:
            self._item = -1
            self.phase = EXPLORE


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
