"""The gateway's core, free of HTTP: model + defense + memory + keys + batching + audit.

:class:`Gateway` answers validated query batches for an authorized key; the FastAPI
routes (``app.py``, ``kserve.py``) only parse, authorize and format.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from starlette.concurrency import run_in_threadpool

from movingtarget.answers import Answers, Reason
from movingtarget.defenses import (
    COMPOSITIONS,
    Correct,
    Defense,
    GatedUpdate,
    build_mechanisms,
    normalized_composition,
    supply_defense,
)
from movingtarget.defenses.moving_target import MovingTarget, check_pool
from movingtarget.defenses.repair import RepairRecord
from movingtarget.errors import ConfigError
from movingtarget.gateway.access.base import Grant, KeyStore, token_digest
from movingtarget.gateway.access.ids import QueryIds
from movingtarget.gateway.access.keys import open_keys
from movingtarget.gateway.observability.audit import AuditLog, deciding_mechanisms
from movingtarget.gateway.observability.metrics import GatewayMetrics
from movingtarget.gateway.problems import Problem
from movingtarget.gateway.server.batching import Arrival, Job, MicroBatcher
from movingtarget.gateway.server.config import GatewayConfig
from movingtarget.gateway.server.secret import operator_secret, schedule_key
from movingtarget.gateway.server.serving import ServedModel, load_served_model
from movingtarget.memory.asked import AskedQueue, QueueEntry, open_queue
from movingtarget.memory.fingerprints.exact import ExactFingerprint, secret_from_env
from movingtarget.memory.stores import InProcessStore, Store
from movingtarget.memory.tenancy import TenantMemory, TenantPolicy
from movingtarget.models.base import is_online

log = logging.getLogger("movingtarget.gateway")


def _space(*parts: object) -> str:
    """A store namespace from ``parts``: letters, digits and underscores, at most 64
    (a long one keeps its start, which names the deployment, and a digest of the rest)."""
    text = re.sub(r"\W", "_", "_".join(str(p) for p in parts))
    if len(text) <= 64:
        return text
    digest = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    return f"{text[:51]}_{digest}"


def _entries_per_query(mech: object) -> int:
    # a robust near-repeat memory stores one band key per band of each query
    return int(getattr(getattr(mech, "fingerprint", None), "bands", 1) or 1)


def build_served_defense(
    config: GatewayConfig, served: ServedModel, policy: TenantPolicy | None = None
) -> Defense:
    """The defense of ``config`` around the served model, its memories multi-tenant.

    Every mechanism that keeps a memory in this process by default (``memorize``,
    ``near-repeat`` with robust fingerprints) gets a :class:`TenantMemory` in
    ``config.store``: one own history per key and a shared cross-key pool, under
    ``policy`` (one policy for the whole defense: the gateway keeps its trusted set).
    Namespaces are named by the mechanism's position, so replicas with the same
    composition share each memory. Memory time is milliseconds since the epoch;
    capacities count queries (a robust near-repeat query holds one entry per band).
    """
    from movingtarget.memory.corrections import open_labels
    from movingtarget.memory.stores.urls import open_store

    defense = _build(config, served)
    # calibrate approximate memories first: calibration forgets what a store holds, and
    # the shared or persistent store must keep it (every replica calibrates the same)
    if served.calibration_x is not None or served.unseen is not None:
        from movingtarget.defenses.near_repeat import calibrate_defense

        calibrate_defense(defense, served.calibration_x, seed=config.seed, unseen=served.unseen)
    for mech in defense.mechanisms:
        if getattr(mech, "requires_calibration", False) and getattr(mech, "calibration", 0) is None:
            raise ConfigError(
                f"{mech.describe()} is calibrated on benign training inputs, and the served "
                "model has none (a saved file): serve DATASET:MODEL, or drop the mechanism"
            )
    policy = policy if policy is not None else tenant_policy(config)
    for i, mech in enumerate(defense.mechanisms):
        if not isinstance(getattr(mech, "store", None), InProcessStore):
            continue
        name = mech.describe().split("(")[0]
        per = _entries_per_query(mech)

        def opener(
            part: str, capacity: int | None, i: int = i, name: str = name, per: int = per
        ) -> Store:
            store = open_store(
                config.store,
                namespace=_space(config.namespace, served.name, i, name, part),
                ttl=config.ttl_ms,
                capacity=None if capacity is None else capacity * per,
            )
            # the shared pool lives as long as the process and its bound is stated at
            # start-up: take that memory now, so serving never stalls to grow it nor
            # faults its pages in; own histories grow with their key's use
            if part == "shared" and isinstance(store, InProcessStore) and capacity:
                store.preallocate()
            return store

        memory = TenantMemory(opener, policy)
        if config.store.strip().startswith("memory:"):
            # in process: open (and preallocate) the pool before the first query; a
            # shared back end is opened on first use, so nothing is opened twice here
            memory.shared  # noqa: B018
        mech.store = memory  # type: ignore[attr-defined]
    for i, mech in enumerate(defense.mechanisms):
        if isinstance(mech, Correct):
            # after calibration, which forgets labels: the store keeps the corrections
            # (keyed band or exact digests, never inputs) for every replica and restart
            space = _space(config.namespace, served.name, i, "correct", "labels")
            mech.table = open_labels(config.store, namespace=space)
    return defense


def _defense_label(spec: str) -> str:
    """``--defense NAME`` for a named composition, else ``--defense`` (its text may be
    long)."""
    return f"--defense {spec.strip()}" if spec.strip() in COMPOSITIONS else "--defense"


def _secret_in_text(label: str) -> str:
    return (
        f"{label}: moving-target(secret=...) puts the schedule's secret on the command line, "
        "where other users of this host can read it; drop it and pass --secret-file PATH or "
        "set $MOVINGTARGET_SECRET"
    )


def _build(config: GatewayConfig, served: ServedModel) -> Defense:
    """The defense of ``config`` around the served model; a moving target in it gets the
    operator's secret and needs a pool (each refused in one line)."""
    spec = config.defense.strip()
    label = _defense_label(spec)
    mechanisms = build_mechanisms(config.defense)
    movers = [m for m in mechanisms if isinstance(m, MovingTarget)]
    if movers:
        try:
            check_pool(served.model)
        except ConfigError:
            raise ConfigError(
                f"{label}: its moving target serves the members of a pool, and --model "
                f"{served.source} is not one: serve a pool, e.g. --model digits:pool"
            ) from None
        if any(m.keyed for m in movers):
            raise ConfigError(_secret_in_text(label))
        key = schedule_key(operator_secret(f"{label}: the moving target's schedule"))
        for mover in movers:
            mover.use_secret(key)
    name = spec if spec in COMPOSITIONS else ""
    refreshes = [m for m in mechanisms if callable(getattr(m, "supply", None))]
    if (refreshes or config.update_tolerance is not None) and served.split is None:
        flag = "--update-tolerance" if config.update_tolerance is not None else label
        raise ConfigError(
            f"{flag}: the model learns on its training data with a canary of held-out "
            f"items, and --model {served.source} is a saved file: serve DATASET:MODEL"
        )
    canary = None
    if served.split is not None:
        test = served.split
        n = min(config.canary, len(test.y_test))
        pick = np.sort(
            np.random.default_rng([config.split_seed, 0xCA7]).choice(len(test.y_test), n, False)
        )
        canary = (test.x_test[pick], test.y_test[pick])
    update = None
    if config.update_tolerance is not None and canary is not None:
        if not is_online(served.model):
            raise ConfigError(
                f"--update-tolerance: --model {served.source} cannot learn (no partial_fit; "
                "serve an online model: mlp, cnn, or a pool of them, e.g. "
                "digits:pool(member=mlp))"
            )
        update = GatedUpdate(
            *canary, tolerance=float(config.update_tolerance), steps=config.update_steps
        )
    defense = Defense(served.model, mechanisms, name=name, seed=config.seed, update=update)
    if refreshes and served.split is not None and canary is not None:
        # a refresh trains new members on the training split, gated on the canary
        supply_defense(defense, served.split, *canary)
    return defense


def tenant_policy(config: GatewayConfig) -> TenantPolicy:
    """The memory policy ``config`` states (its trusted set starts empty: the gateway
    fills it from each request's key)."""
    return TenantPolicy(
        quorum=config.cross_key_quorum,
        key_capacity=config.memory_key_capacity or None,
        shared_capacity=config.memory_capacity or None,
    )


def memory_banner(
    config: GatewayConfig, policy: TenantPolicy, defense: Defense | None = None
) -> str:
    """What the memory keeps, for how long and (in this process) in how much memory, for
    the start-up line."""
    kept = (
        "forever (no --memory-ttl)"
        if config.ttl_ms is None
        else f"for {config.memory_ttl_s:g} s after first seen"
    )
    trusted = len(config.trusted_keys)
    held = ""
    mechanisms = defense.mechanisms if defense is not None else []
    memories = [getattr(m, "store", None) for m in mechanisms]
    pools = [m.shared for m in memories if isinstance(m, TenantMemory)]
    sizes = [p.nbytes for p in pools if isinstance(p, InProcessStore)]
    if sizes:
        held = f"; shared pools hold {sum(sizes) / 2**20:,.0f} MiB in this process"
    return (
        f"memory policy: {policy.describe()}; queries kept {kept}{held}; "
        f"{trusted} trusted key name(s), held to their own history and never shown to others"
    )


def repair_banner(gateway: Gateway) -> str:
    """Who teaches the defense, and where its corrections and labeling queue live, for
    the start-up line (never a secret, never a password)."""
    from movingtarget.memory.stores.redaction import redact_safely

    cfg = gateway.config
    movers = [m for m in gateway.defense.mechanisms if isinstance(m, MovingTarget)]
    schedule = "; moving target keyed by the operator's secret" if movers else ""
    if not gateway.defense.learns:
        return f"repair: the defense does not learn from labels{schedule}"
    if not gateway.repairs:
        return f"repair: no --labeler-key, so labels never change an answer{schedule}"
    return (
        f"repair: {len(gateway.labelers)} labeler key name(s); corrections and the labeling "
        f"queue (<= {cfg.labeling_queue_capacity:,} queries, <= "
        f"{cfg.labeling_queue_per_key:,} per key) in {redact_safely(cfg.store)}{schedule}"
    )


@dataclass(frozen=True)
class _Meta:
    request_id: str
    query_ids: list[str]
    key_id: int
    key_name: str


class Gateway:
    """One replica's serving state.

    Examples
    --------
    >>> import tempfile, os
    >>> cfg = GatewayConfig(keys=os.path.join(tempfile.mkdtemp(), "k.db"))
    >>> gw = Gateway.from_config(cfg)      # doctest: +SKIP
    >>> gw.defense.describe()              # doctest: +SKIP
    'memorize(on_repeat=abstain) > argmax'
    """

    def __init__(
        self,
        config: GatewayConfig,
        served: ServedModel,
        defense: Defense,
        keys: KeyStore,
        policy: TenantPolicy | None = None,
    ) -> None:
        self.config = config.check()
        #: The memories' multi-tenant policy; its trusted set follows each request's key.
        self.policy = policy if policy is not None else tenant_policy(self.config)
        self._trusted_names = frozenset(self.config.trusted_keys)
        self.served = served
        self.defense = defense
        self.keys = keys
        self.metrics = GatewayMetrics()
        self.replica = config.replica or f"{socket.gethostname()}:{os.getpid()}"
        self.audit = AuditLog(
            config.audit,
            defense=defense.name,
            model=served.name,
            model_version=served.version,
            mechanisms=deciding_mechanisms(defense),
            replica=self.replica,
            model_sha256=served.sha256,
        )
        # what is deployed, for an operator's dashboard: the file's bytes by their digest
        self.metrics.model.info(
            {
                "name": served.name,
                "version": served.version,
                "format": served.format,
                "sha256": served.sha256 or "",
            }
        )
        self.ids = QueryIds(secret_from_env())
        self.batcher: MicroBatcher[Answers] = MicroBatcher(
            self._answer, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms
        )
        self.ready = False
        #: Labeler keys' labels repair the defense (only these, and only if it learns):
        #: the inputs of the last ``repair_window`` queries stay in RAM, by query id
        #: (never on disk), for a labeler to label.
        self.labelers = frozenset(self.config.labeler_keys)
        self.repairs = bool(self.labelers) and defense.learns
        self._recent: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._recent_lock = threading.Lock()
        #: Where asked queries wait for a labeler: in ``--store`` beside the memory, so
        #: any replica can read it and learn from a labeler's label, after a restart too
        #: (None unless this gateway repairs).
        self.queue: AskedQueue | None = None
        if self.repairs:
            self.queue = open_queue(
                self.config.store,
                namespace=_space(self.config.namespace, served.name, "labeling_queue"),
                capacity=self.config.labeling_queue_capacity,
                per_client=self.config.labeling_queue_per_key,
            )
            self._asked_fp = ExactFingerprint()

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Gateway:
        """Load the model, build the defense, open memory and keys."""
        config = config.check()
        movers = [p for n, p in normalized_composition(config.defense) if n == "moving-target"]
        if movers:
            # before the model loads (seconds): a missing secret is told at once
            label = _defense_label(config.defense)
            if any(p.get("secret") is not None for p in movers):
                raise ConfigError(_secret_in_text(label))
            operator_secret(f"{label}: the moving target's schedule")
        served = load_served_model(
            config.model,
            test_size=config.test_size,
            split_seed=config.split_seed,
            model_seed=config.model_seed,
            cache_dir=config.cache_dir,
            input_shape=config.input_shape,
            trust=config.trust,
            trusted_types=config.trusted_types,
            output=config.model_output,
        )
        policy = tenant_policy(config)
        defense = build_served_defense(config, served, policy)
        keys = open_keys(config.keys, namespace=config.namespace)
        keys.ping()  # an unreachable key store is a start-up error, not a first-request 503
        return cls(config, served, defense, keys, policy)

    async def start(self) -> None:
        """Start the micro-batcher (in the server's event loop)."""
        await self.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        """Stop batching; close the audit log and the key store."""
        self.ready = False
        await self.batcher.stop()
        self.audit.close()
        self.keys.close()
        for shared in self._shared_state():
            close = getattr(shared, "close", None)
            if close is not None:
                close()

    # -- readiness ---------------------------------------------------------------------

    def _probe(self) -> dict[str, bool]:
        # a read that changes nothing: can the key store and every memory be reached?
        checks = {"started": self.ready}
        try:
            self.keys.ping()
            checks["keys"] = True
        except Exception:  # any failure reads as not ready; the detail goes to the log
            log.warning("readiness: the key store cannot be reached", exc_info=True)
            checks["keys"] = False
        probe = np.zeros(1, dtype=np.uint64)
        ok = True
        for mech in self.defense.mechanisms:
            store = getattr(mech, "store", None)
            if store is None:
                continue
            try:
                store.lookup(probe)
            except Exception:
                log.warning("readiness: a memory store cannot be reached", exc_info=True)
                ok = False
        for shared in self._shared_state():
            try:
                shared.ping()
            except Exception:
                log.warning("readiness: a memory store cannot be reached", exc_info=True)
                ok = False
        checks["memory"] = ok
        return checks

    def _shared_state(self) -> list[Any]:
        """The correction memories and the labeling queue kept in the store."""
        tables = [m.table for m in self.defense.mechanisms if isinstance(m, Correct)]
        return [*tables, *([self.queue] if self.queue is not None else [])]

    async def labeling_queue(self, limit: int) -> tuple[int, list[QueueEntry]]:
        """How many queries wait for a label, and the ``limit`` oldest (a labeler's view)."""
        queue = self.queue
        assert queue is not None

        def read() -> tuple[int, list[QueueEntry]]:
            return len(queue), queue.pending(limit)

        return await run_in_threadpool(read)

    async def readiness(self) -> dict[str, bool]:
        """Whether this replica can answer: started, key store and memories reachable
        (component names only: never an address)."""
        return await run_in_threadpool(self._probe)

    # -- access ----------------------------------------------------------------------

    async def authorize(self, token: str, cost: int) -> Grant:
        """The key's grant for ``cost`` queries, or a 401/403/429 Problem."""
        try:
            grant = await run_in_threadpool(self.keys.authorize, token_digest(token), cost)
        except Problem as p:
            self.metrics.refusals.labels(p.kind).inc()
            if p.key is not None:  # a known key over its limits (never an unknown token)
                self.metrics.key_refusals.labels(p.key, p.kind).inc()
            raise
        # before its queries reach the memories, which read the trusted set
        self.policy.set_trusted(grant.key_id, grant.name in self._trusted_names)
        return grant

    @asynccontextmanager
    async def refusing(self, token: str) -> AsyncIterator[None]:
        """Around reading and checking a request: a Problem raised inside is counted as a
        refusal and raised again, after the key is checked (a bad key is told so before a
        bad body)."""
        try:
            yield
        except Problem as bad:
            grant = await self.authorize(token, 0)
            self.metrics.refusals.labels(bad.kind).inc()
            self.metrics.key_refusals.labels(grant.name, bad.kind).inc()
            raise

    # -- answering -------------------------------------------------------------------

    def _answer(
        self,
        x: NDArray[np.float32],
        clients: NDArray[np.int64],
        times: NDArray[np.int64],
        jobs: list[Job],
    ) -> list[Answers]:
        # runs on the batcher's thread: one batch at a time, in arrival order
        answers = self.defense.answer(x, clients, times)
        if self.repairs:
            self._remember(x, jobs)
            if answers.ask is not None and answers.ask.any():
                self._queue_asked(x, clients, times, jobs, answers)
        self.metrics.record_answers(answers)
        if self.audit.path is not None:
            rids: list[str] = []
            qids: list[str] = []
            names: list[str] = []
            for job in jobs:
                meta: _Meta = job.meta
                n = len(job.x)
                rids += [meta.request_id] * n
                qids += meta.query_ids
                names += [meta.key_name] * n
            self.audit.write(rids, qids, clients.tolist(), names, times.tolist(), answers)
        out, start = [], 0
        for job in jobs:
            end = start + len(job.x)
            mine = Answers(answers.labels[start:end], answers.reasons[start:end])
            self.metrics.record_key(job.meta.key_name, mine)
            out.append(mine)
            start = end
        return out

    def _remember(self, x: NDArray[np.float32], jobs: list[Job]) -> None:
        qids = [q for job in jobs for q in job.meta.query_ids]
        with self._recent_lock:
            for qid, row in zip(qids, x, strict=True):
                self._recent[qid] = row.copy()
            while len(self._recent) > self.config.repair_window:
                self._recent.popitem(last=False)

    def _queue_asked(
        self,
        x: NDArray[np.float32],
        clients: NDArray[np.int64],
        times: NDArray[np.int64],
        jobs: list[Job],
        answers: Answers,
    ) -> None:
        # the queries the defense asked labels for (its ask_on rule) go to the labeling
        # queue, one entry per distinct input (an attacker's repeats hold one)
        assert self.queue is not None and answers.ask is not None
        rows = np.flatnonzero(answers.ask)
        qids = [q for job in jobs for q in job.meta.query_ids]
        fps = self._asked_fp.fingerprint(x[rows]).tolist()
        flat = x[rows].reshape(len(rows), -1)
        entries = [
            QueueEntry(
                qids[r],
                int(fp),
                int(clients[r]),
                int(times[r]),
                Reason(int(answers.reasons[r])).label,
                flat[j],
            )
            for j, (r, fp) in enumerate(zip(rows.tolist(), fps, strict=True))
        ]
        self.queue.offer(entries)

    def _labeled_inputs(self, query_ids: list[str]) -> NDArray[np.float32]:
        # recent queries of this replica first (RAM), then the shared labeling queue
        with self._recent_lock:
            found = {q: self._recent[q] for q in query_ids if q in self._recent}
        rest = [q for q in dict.fromkeys(query_ids) if q not in found]
        if rest and self.queue is not None:
            shape = self.served.input_shape
            found |= {q: e.x.reshape(shape) for q, e in self.queue.get(rest).items()}
        missing = [q for q in query_ids if q not in found]
        if missing:
            raise Problem(
                400,
                "invalid-input",
                f"query id {missing[0]!r} is not one of the last "
                f"{self.config.repair_window} queries this replica answered, nor in the "
                "labeling queue",
            )
        return np.stack([found[q] for q in query_ids])

    async def repair(
        self, grant: Grant, labels: list[tuple[str, int]]
    ) -> tuple[int, RepairRecord | None]:
        """A labeler's labels: the defense learns those of recent queries of this replica
        or of queries in the labeling queue (on the batch thread, between batches); the
        labeled ones leave the queue, and each repair is logged. Returns how many it
        learned and, with ``--update-tolerance``, the gated model update's record (kept
        or rolled back). Raises :class:`Problem` (400) naming a query id that is
        neither."""
        if not labels:
            return 0, None
        qids = [q for q, _ in labels]
        x = await run_in_threadpool(self._labeled_inputs, qids)
        y = np.array([label for _, label in labels], np.int64)

        def learn() -> tuple[int, RepairRecord | None]:
            before = len(self.defense.repairs)
            n = self.defense.learn(x, y)
            return n, (self.defense.repairs[-1] if len(self.defense.repairs) > before else None)

        learned, record = await self.batcher.call(learn)
        if self.queue is not None:
            await run_in_threadpool(self.queue.remove, qids)
        if record is not None and not record.accepted:
            log.warning(
                "repair: key %r's %d labels would drop canary accuracy %.4f -> %.4f: the "
                "model update is rolled back",
                grant.name,
                len(y),
                record.before,
                record.after,
            )
        log.info("repair: key %r labeled %d queries, learned %d", grant.name, len(y), learned)
        self.audit.repair(grant.key_id, grant.name, qids, y.tolist(), learned, update=record)
        return int(learned), record

    async def classify(
        self,
        x: NDArray[np.float32],
        grant: Grant,
        request_id: str,
        arrival: Arrival | None = None,
    ) -> tuple[list[str], Answers]:
        """Answer a validated batch for an authorized key: its query ids and answers.

        Query ids stem from a fresh server-side nonce, never from the client's request id
        (a client may reuse ``X-Request-ID``): they are unique whatever it sends, and the
        request id is recorded beside them in the audit log."""
        query_ids = self.ids.issue(secrets.token_hex(8), len(x), grant.key_id)
        meta = _Meta(request_id, query_ids, grant.key_id, grant.name)
        now_ms = time.time_ns() // 1_000_000
        answers = await self.batcher.submit(x, grant.key_id, now_ms, meta, arrival)
        return query_ids, answers
