"""The arena: a deployment timeline of benign clients and adversaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget._passes import Passes
from movingtarget.arena.eventlog import EventLog
from movingtarget.arena.transforms import NearDuplicates, check_transforms
from movingtarget.attacks.base import NO_TARGET, Adversary, Proposal
from movingtarget.defenses.base import Defense
from movingtarget.defenses.labeling import LabelingQueue
from movingtarget.errors import ConfigError

#: Client ids: benign clients are 1..benign_clients, adversary i is ADVERSARY_CLIENT + i.
ADVERSARY_CLIENT = 1_000_000
#: Account k of adversary i (a :class:`~movingtarget.attacks.base.Proposal` ``account``)
#: is client ``ADVERSARY_CLIENT + i + k * ACCOUNT_STRIDE``; account 0 is the default id.
ACCOUNT_STRIDE = 1_000_000


def adversary_client(
    adversary: int | NDArray[np.int64], account: int | NDArray[np.int64] = 0
) -> Any:
    """The client id of account ``account`` of adversary ``adversary`` (scalars or arrays).

    >>> adversary_client(0), adversary_client(1), adversary_client(0, 2)
    (1000000, 1000001, 3000000)
    """
    return ADVERSARY_CLIENT + adversary + ACCOUNT_STRIDE * account


@dataclass(frozen=True)
class ArenaConfig:
    """The threat model and traffic of one deployment.

    Parameters
    ----------
    queries:
        ``m``, the adversarial queries each adversary may send.
    benign_ratio:
        Benign queries per adversarial query, spread evenly along the timeline.
    duplicate_share:
        Share of benign queries that are legitimate exact duplicates of an earlier
        benign query (one e-mail sent to many users).
    benign_clients:
        Number of distinct benign client ids.
    adversary_batch:
        0: each adversary sees answers before choosing its next queries (it may
        commit to several at once); n > 0: it must send exactly n queries per
        round, answered together.
    near_duplicate_share:
        Share of benign queries that are near-duplicates of an earlier benign query:
        the same item transformed (re-encoded, rounded, shifted, brightness changed).
    near_duplicate_transforms:
        The transforms near-duplicates draw from (see :mod:`movingtarget.arena.transforms`).
    lifetime:
        0: one deployment; L > 0: the deployment is replaced after every L queries
        (all traffic counted), which resets what a dynamic defense learned.
    benign_repeats:
        False (default): a deployment whose benign queries outnumber the benign pool is
        refused (:meth:`check_benign_pool`), since benign users would then re-send items
        beyond the configured duplicates and a memorizing defense would be charged for
        repeats nobody meant; True: allow it (the pool is sent again in a new order).
    oracle_budget:
        0 (default): no oracle. B > 0: an oracle that knows every query's true class
        gives it to the defense (:meth:`Defense.learn
        <movingtarget.defenses.base.Defense.learn>`) for queries the defense asked
        about (``Answers.ask``), at most B labels per ``oracle_window`` queries; asks
        over budget are dropped, and an input already asked is not asked again.
    oracle_window:
        0: ``oracle_budget`` covers the whole run; N > 0: it is per N queries (all
        traffic counted, by the time a query was asked).
    oracle_delay:
        Queries answered after an ask before its label arrives: a query asked at time
        ``t`` can be corrected from time ``t + oracle_delay + 1`` on. Labels arrive
        between rounds; a label still pending when the deployment is replaced
        (``lifetime``) reaches the new deployment.

    Examples
    --------
    >>> ArenaConfig(queries=100).queries
    100
    >>> ArenaConfig(queries=1000, benign_ratio=0.04).benign_queries()
    40
    """

    queries: int = 10_000
    benign_ratio: float = 0.1
    duplicate_share: float = 0.05
    benign_clients: int = 100
    adversary_batch: int = 0
    lifetime: int = 0
    near_duplicate_share: float = 0.0
    near_duplicate_transforms: tuple[str, ...] = ("requantize", "levels", "shift", "brightness")
    benign_repeats: bool = False
    oracle_budget: int = 0
    oracle_window: int = 0
    oracle_delay: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.queries >= 1, "queries must be >= 1"),
            (self.benign_ratio >= 0, "benign_ratio must be >= 0"),
            (0 <= self.duplicate_share <= 1, "duplicate_share must be in [0, 1]"),
            (self.benign_clients >= 1, "benign_clients must be >= 1"),
            (self.adversary_batch >= 0, "adversary_batch must be >= 0"),
            (self.lifetime >= 0, "lifetime must be >= 0"),
            (0 <= self.near_duplicate_share <= 1, "near_duplicate_share must be in [0, 1]"),
            (self.oracle_budget >= 0, "oracle_budget must be >= 0 (0: no oracle)"),
            (self.oracle_window >= 0, "oracle_window must be >= 0 (0: the whole run)"),
            (self.oracle_delay >= 0, "oracle_delay must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"arena: {message}")
        check_transforms(self.near_duplicate_transforms, "arena.near_duplicate_transforms")

    def benign_queries(self, adversaries: int = 1) -> int:
        """Benign queries of one deployment with ``adversaries`` adversaries (the count
        :meth:`Arena.run` sends: ``floor(benign_ratio * adversarial queries)``)."""
        return int(self.benign_ratio * self.queries * adversaries)

    def check_benign_pool(self, pool_size: int, adversaries: int = 1) -> None:
        """Refuse (:class:`ConfigError`) a deployment whose benign queries outnumber the
        benign pool, unless ``benign_repeats`` allows it.

        >>> cfg = ArenaConfig(queries=10_000, benign_ratio=0.04)
        >>> cfg.check_benign_pool(449)                       # 400 benign queries fit
        >>> cfg.check_benign_pool(270)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        movingtarget.errors.ConfigError: arena: 400 benign queries ... holds 270 items, ...
        """
        n = self.benign_queries(adversaries)
        # an empty pool sends no benign traffic at all (Arena.run skips it)
        if self.benign_repeats or pool_size == 0 or n <= pool_size:
            return
        who = f"{adversaries} adversaries x " if adversaries != 1 else ""
        raise ConfigError(
            f"arena: {n} benign queries ({who}queries {self.queries} x benign_ratio "
            f"{self.benign_ratio:g}) but the benign pool holds {pool_size} items, so benign "
            "users would re-send items beyond the configured duplicates; lower "
            "arena.benign_ratio, raise test_size (a larger pool), or set "
            "arena.benign_repeats = true to allow it"
        )


class BenignTraffic:
    """Benign queries: the benign pool in a seeded order (each item once per pass),
    with shares of exact and near duplicates of earlier benign queries (only the other
    queries use up fresh pool items).

    Examples
    --------
    >>> x = np.arange(8, dtype=np.float32).reshape(4, 2); y = np.array([0, 1, 0, 1])
    >>> traffic = BenignTraffic(x, y, ArenaConfig(duplicate_share=0.0), np.random.default_rng(0))
    >>> sorted(traffic.draw(4).tolist())          # one pass: every item once
    [0, 1, 2, 3]
    """

    def __init__(
        self,
        pool_x: NDArray[np.float32],
        pool_y: NDArray[np.int64],
        config: ArenaConfig,
        rng: np.random.Generator,
    ) -> None:
        self.pool_x, self.pool_y = pool_x, pool_y
        self.config, self.rng = config, rng
        self._passes = Passes(len(pool_y), rng)
        self._sent: list[NDArray[np.int64]] = []
        self._n_sent = 0
        self.duplicate = np.zeros(0, dtype=bool)  # exact-duplicate rows of the last draw
        self.near = np.zeros(0, dtype=bool)  # near-duplicate rows of the last draw
        self._transforms: NearDuplicates | None = None

    def queries(self, idx: NDArray[np.int64]) -> NDArray[np.float32]:
        """The inputs of the last :meth:`draw`: near-duplicate rows transformed."""
        x = self.pool_x[idx]
        if self.near.any():
            if self._transforms is None:
                self._transforms = NearDuplicates(
                    self.config.near_duplicate_transforms,
                    lo=float(self.pool_x.min()),
                    hi=float(self.pool_x.max()),
                )
            x[self.near] = self._transforms.apply(x[self.near], self.rng)
        return x

    def draw(self, n: int) -> NDArray[np.int64]:
        """Pool indices of the next ``n`` benign queries.

        Duplicate and near-duplicate rows repeat earlier benign items; only the other
        rows take fresh items from the pool, so the pool lasts as long as it can.
        """
        self.duplicate = np.zeros(n, dtype=bool)
        self.near = np.zeros(n, dtype=bool)
        if self._n_sent and self.config.duplicate_share > 0:
            self.duplicate = self.rng.random(n) < self.config.duplicate_share
        if self._n_sent and self.config.near_duplicate_share > 0:
            # near-duplicates: earlier benign items again, transformed in queries()
            self.near = self.rng.random(n) < self.config.near_duplicate_share
            self.duplicate &= ~self.near
        repeat = self.duplicate | self.near
        idx = np.empty(n, dtype=np.int64)
        idx[~repeat] = self._passes.take(n - int(repeat.sum()))
        if repeat.any():
            history = np.concatenate(self._sent)
            idx[repeat] = history[self.rng.integers(0, len(history), int(repeat.sum()))]
        self._sent.append(idx)
        self._n_sent += n
        return idx


class Arena:
    """Runs adversaries and benign clients against a defense and records every query.

    Examples
    --------
    >>> import numpy as np
    >>> from movingtarget.attacks import TestSetAttack
    >>> from movingtarget.defenses import build_defense
    >>> class Wrong:                       # always answers class 1
    ...     n_classes = 2
    ...     def predict_proba(self, x):
    ...         return np.tile([0.0, 1.0], (len(x), 1))
    >>> x = np.zeros((4, 2), np.float32); y = np.array([0, 0, 1, 1])
    >>> arena = Arena(ArenaConfig(queries=50, benign_ratio=0))
    >>> log = arena.run(build_defense("deterministic", Wrong()),
    ...                 [TestSetAttack(x, y, 2, seed=0)], x, y, seed=0)
    >>> len(log)
    50
    """

    def __init__(self, config: ArenaConfig | None = None) -> None:
        self.config = config or ArenaConfig()
        #: The oracle's labeling queue of the last run (None without an oracle): its
        #: counters (``asked``, ``granted``, ``dropped``, ``delivered``) and
        #: ``history()`` of delivered labels.
        self.oracle: LabelingQueue | None = None

    def run(
        self,
        defense: Defense,
        adversaries: Sequence[Adversary],
        benign_x: NDArray[np.float32],
        benign_y: NDArray[np.int64],
        *,
        seed: int = 0,
        progress: Callable[[int], None] | None = None,
        inputs: bool = False,
    ) -> EventLog:
        """One deployment; returns its :class:`EventLog`. ``progress`` gets query counts;
        ``inputs`` keeps the query inputs in the log (``log.x``).

        An adversary with a ``close()`` method (an attack running in a thread of its own,
        :class:`~movingtarget.attacks.query.QueryAdversary`) is closed when the run ends,
        its budget spent or an error raised.
        """
        try:
            return self._run(defense, adversaries, benign_x, benign_y, seed, progress, inputs)
        finally:
            for adversary in adversaries:
                close = getattr(adversary, "close", None)
                if callable(close):
                    close()

    def _run(
        self,
        defense: Defense,
        adversaries: Sequence[Adversary],
        benign_x: NDArray[np.float32],
        benign_y: NDArray[np.int64],
        seed: int,
        progress: Callable[[int], None] | None,
        inputs: bool,
    ) -> EventLog:
        cfg = self.config
        if not adversaries:
            raise ConfigError("arena: at least one adversary is needed")
        rng = np.random.default_rng([seed, 0xA7E4A])
        benign_x = np.asarray(benign_x, np.float32)
        benign_y = np.asarray(benign_y, np.int64)
        cfg.check_benign_pool(len(benign_y), len(adversaries))
        benign = (
            BenignTraffic(benign_x, benign_y, cfg, rng)
            if cfg.benign_ratio > 0 and len(benign_y)
            else None
        )
        remaining = [cfg.queries] * len(adversaries)
        exactly = cfg.adversary_batch > 0
        cap = cfg.adversary_batch or 1 << 30
        rows = _Rows(inputs)
        clock = since_reset = adv_sent = benign_sent = 0
        defense.reset()
        oracle = self.oracle = (
            LabelingQueue(cfg.oracle_budget, window=cfg.oracle_window, delay=cfg.oracle_delay)
            if cfg.oracle_budget > 0
            else None
        )
        while any(remaining):
            limit_cap = cap
            if cfg.lifetime:
                limit_cap = min(cap, max(cfg.lifetime - since_reset, 1))
            proposals = []
            for i, adversary in enumerate(adversaries):
                if remaining[i]:
                    limit = min(remaining[i], limit_cap)
                    p = adversary.propose(limit, exactly=exactly)
                    if not 1 <= len(p) <= limit:
                        raise RuntimeError(
                            f"adversary {i} proposed {len(p)} queries, limit {limit}"
                        )
                    _check_accounts(i, p)
                    remaining[i] -= len(p)
                    proposals.append((i, p))
            n_adv = sum(len(p) for _, p in proposals)
            adv_sent += n_adv
            n_benign = 0
            if benign is not None:
                # integer accounting: exactly floor(ratio * adversarial) benign so far
                n_benign = int(cfg.benign_ratio * adv_sent) - benign_sent
                benign_sent += n_benign
            n = n_adv + n_benign
            times = np.arange(clock, clock + n, dtype=np.int64)
            if len(proposals) == 1 and n_benign == 0:
                # the common round: one adversary alone, no shuffling needed
                i, p = proposals[0]
                owner, clients = constant_columns(i, n)
                if p.account is not None:
                    clients = adversary_client(i, p.account)
                answers = defense.answer(p.x, clients, times)
                adversaries[i].observe(answers.labels)
                if oracle is not None and answers.ask is not None and answers.ask.any():
                    ask = answers.ask
                    oracle.ask(p.x[ask], p.y_true[ask], times[ask], clients[ask])
                rows.add(
                    times,
                    clients,
                    owner,
                    p.source,
                    p.noisy,
                    p.y_true,
                    p.target,
                    answers.labels,
                    answers.reasons,
                    x=p.x,
                )
            else:
                bidx = benign.draw(n_benign) if n_benign else np.zeros(0, np.int64)  # type: ignore[union-attr]
                bx = benign.queries(bidx) if n_benign else benign_x[bidx]  # type: ignore[union-attr]
                b_near = benign.near if n_benign else np.zeros(0, bool)  # type: ignore[union-attr]
                order = rng.permutation(n)
                owner = np.concatenate(
                    [np.full(len(p), i, np.int64) for i, p in proposals]
                    + [np.full(n_benign, -1, np.int64)]
                )[order]
                x = np.concatenate([p.x for _, p in proposals] + [bx])[order]
                account = np.concatenate(
                    [_accounts(p) for _, p in proposals] + [np.zeros(n_benign, np.int64)]
                )[order]
                clients = np.where(
                    owner >= 0,
                    adversary_client(owner, account),
                    rng.integers(1, cfg.benign_clients + 1, n),
                )
                answers = defense.answer(x, clients, times)
                for i, _ in proposals:
                    adversaries[i].observe(answers.labels[owner == i])

                parts = [p for _, p in proposals]
                y_true = _column(parts, "y_true", benign_y[bidx], order)
                if oracle is not None and answers.ask is not None and answers.ask.any():
                    ask = answers.ask
                    oracle.ask(x[ask], y_true[ask], times[ask], clients[ask])  # type: ignore[arg-type]
                rows.add(
                    times,
                    clients,
                    owner,
                    _column(parts, "source", bidx, order),
                    _column(parts, "noisy", b_near, order),
                    y_true,
                    _column(parts, "target", np.full(n_benign, NO_TARGET, np.int64), order),
                    answers.labels,
                    answers.reasons,
                    x=x,
                )
            clock += n
            since_reset += n
            if cfg.lifetime and since_reset >= cfg.lifetime:
                defense.reset()
                since_reset = 0
            if oracle is not None and oracle.pending:
                labels = oracle.due(clock)
                if len(labels):
                    defense.learn(labels.x, labels.y, labels.asked_at)
            if progress is not None:
                progress(n_adv)
        names = [getattr(a, "name", type(a).__name__) for a in adversaries]
        return rows.log(names)


_CONSTANT_COLUMNS: dict[tuple[int, int], tuple[NDArray[np.int64], NDArray[np.int64]]] = {}


def constant_columns(adversary: int, n: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Owner and client columns of a round sent by one adversary alone (cached: the
    common round is one query)."""
    key = (adversary, n)
    cols = _CONSTANT_COLUMNS.get(key)
    if cols is None:
        owner = np.full(n, adversary, np.int64)
        cols = (owner, owner + ADVERSARY_CLIENT)
        for c in cols:
            c.flags.writeable = False
        if len(_CONSTANT_COLUMNS) < 256:
            _CONSTANT_COLUMNS[key] = cols
    return cols


def _accounts(p: Proposal) -> NDArray[np.int64]:
    """The account column of a proposal (zeros: the adversary's default client id)."""
    return np.zeros(len(p), np.int64) if p.account is None else p.account


def _check_accounts(i: int, p: Proposal) -> None:
    if p.account is None:
        return
    account = np.asarray(p.account)
    if account.shape != (len(p),) or (len(p) and int(account.min()) < 0):
        raise RuntimeError(
            f"adversary {i} proposed an account column of shape {account.shape} (needs one "
            f"account >= 0 per query, {len(p)})"
        )
    p.account = account.astype(np.int64, copy=False)


def _column(
    parts: list[Proposal], name: str, benign_part: NDArray[np.generic], order: NDArray[np.int64]
) -> NDArray[np.generic]:
    """One event-log column of a mixed round, in the batch's shuffled order."""
    return np.concatenate([getattr(p, name) for p in parts] + [benign_part])[order]


class _Rows:
    """Per-round column chunks, joined once at the end (cheap appends on the hot path)."""

    def __init__(self, inputs: bool = False) -> None:
        self.chunks: list[tuple[NDArray[np.generic], ...]] = []
        self.inputs = inputs
        self.x: list[NDArray[np.float32]] = []

    def add(self, *cols: NDArray[np.generic], x: NDArray[np.float32] | None = None) -> None:
        self.chunks.append(cols)
        if self.inputs and x is not None:
            self.x.append(np.asarray(x, np.float32))

    def log(self, names: list[str]) -> EventLog:
        if not self.chunks:
            return EventLog.empty(names)
        cols = [np.concatenate(c) for c in zip(*self.chunks, strict=True)]
        t, client, owner, source, noisy, y_true, target, answer, reason = cols
        sizes = np.array([len(c[0]) for c in self.chunks])
        rounds = np.repeat(np.arange(len(self.chunks), dtype=np.int64), sizes)
        i64 = np.int64
        return EventLog(
            t=t.astype(i64),
            round=rounds,
            client=client.astype(i64),
            adversary=owner.astype(i64),
            source=source.astype(i64),
            noisy=noisy.astype(i64),
            y_true=y_true.astype(i64),
            target=target.astype(i64),
            answer=answer.astype(i64),
            reason=reason.astype(np.uint8),
            adversaries=names,
            x=np.concatenate(self.x) if self.inputs and self.x else None,
        )
