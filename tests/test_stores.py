"""The store contract, for every store (in-process, SQLite, Redis), and what only the
persistent and shared stores promise: SQLite keeps every acknowledged fingerprint
through a restart and ``kill -9`` of the writer; processes sharing one Redis (or one
SQLite file) catch each other's repeats, with exact counts under concurrency.

Redis tests run against a real ``redis-server`` (see ``conftest.py``); nothing is mocked.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from movingtarget.defenses import build_mechanisms
from movingtarget.errors import ConfigError, DataError, Unavailable
from movingtarget.memory import ExactFingerprint, InProcessStore, SQLiteStore, Store, open_store
from movingtarget.memory.stores._redis_launcher import RedisServer
from movingtarget.memory.stores.redis_store import CHUNK, RedisStore
from reference_store import ReferenceStore
from together import at_once

KINDS = ("memory", "sqlite", "redis")
MakeStore = Callable[..., Store]

U64 = np.uint64
# keys of both signs as int64 (ties in first-seen time are broken by that order)
POOL = [*range(26), 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2, 2**64 - 1]


def u64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stores")


@pytest.fixture(params=KINDS)
def make_store(
    request: pytest.FixtureRequest, session_dir: Path, redis_server: RedisServer
) -> Iterator[MakeStore]:
    """A factory of fresh, empty stores of one kind, opened through their URLs."""
    kind: str = request.param
    opened: list[Store] = []

    def make(ttl: int | None = None, capacity: int | None = None) -> Store:
        name = uuid.uuid4().hex
        url = {
            "memory": "memory://",
            "sqlite": f"sqlite:///{session_dir / name}.db",
            "redis": f"{redis_server.url}?namespace=t{name}",
        }[kind]
        store = open_store(url, ttl=ttl, capacity=capacity)
        opened.append(store)
        return store

    yield make
    for store in opened:
        close = getattr(store, "close", None)
        if close is not None:
            close()


# -- the contract, every store --------------------------------------------------------
def test_observe_counts_repeats_within_and_across_batches(make_store: MakeStore) -> None:
    store = make_store()
    assert isinstance(store, Store)
    assert store.observe(u64(1, 2, 1), np.arange(3)).tolist() == [0, 0, 1]
    assert store.observe(u64(2, 3, 2, 1), np.arange(3, 7)).tolist() == [1, 0, 2, 2]
    assert store.lookup(u64(1, 2, 3, 4, 1)).tolist() == [3, 3, 1, 0, 3]
    assert len(store) == 3
    # lookup records nothing
    assert store.lookup(u64(4)).tolist() == [0]
    assert len(store) == 3
    assert store.observe(u64(), np.arange(0)).tolist() == []
    assert store.lookup(u64()).tolist() == []


@pytest.mark.parametrize("padding", [0, 100])  # small batches and the batch path
def test_every_bit_of_the_key_counts(make_store: MakeStore, padding: int) -> None:
    store = make_store()
    edge = u64(0, 1, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 1)
    keys = np.concatenate([edge, np.arange(1000, 1000 + padding, dtype=np.uint64)])
    assert store.observe(keys, np.zeros(len(keys), np.int64)).tolist() == [0] * len(keys)
    assert store.lookup(keys).tolist() == [1] * len(keys)
    assert store.lookup(u64(2, 2**64 - 2, 2**62)).tolist() == [0, 0, 0]
    assert len(store) == len(keys)


def test_large_batch_matches_a_dictionary(make_store: MakeStore) -> None:
    # more than one Redis script call (CHUNK keys), many duplicates across chunks
    store = make_store()
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 30_000, CHUNK * 2 + 123).astype(np.uint64) * U64(0x9E3779B97F4A7C15)
    seen: dict[int, int] = {}
    expected = []
    for k in keys.tolist():
        expected.append(seen.get(k, 0))
        seen[k] = seen.get(k, 0) + 1
    assert store.observe(keys, np.arange(len(keys))).tolist() == expected
    probe = np.concatenate([keys[:500], u64(12345, 67890)])
    assert store.lookup(probe).tolist() == [seen.get(k, 0) for k in probe.tolist()]
    assert len(store) == len(seen)


def test_clear_forgets_everything(make_store: MakeStore) -> None:
    store = make_store()
    store.observe(u64(5, 6, 5), np.arange(3))
    store.clear()
    assert len(store) == 0
    assert store.lookup(u64(5, 6)).tolist() == [0, 0]
    assert store.observe(u64(5), np.array([9])).tolist() == [0]


def test_ttl_expires_entries_after_their_first_seen_time(make_store: MakeStore) -> None:
    store = make_store(ttl=10)
    store.observe(u64(1), np.array([0]))
    store.observe(u64(2), np.array([5]))
    assert store.lookup(u64(1, 2)).tolist() == [1, 1]
    store.observe(u64(1), np.array([9]))  # a repeat does not extend the entry's life
    assert store.lookup(u64(1)).tolist() == [2]
    store.observe(u64(3), np.array([10]))  # clock 10: key 1 (first seen 0) expires
    assert store.lookup(u64(1, 2, 3)).tolist() == [0, 1, 1]
    assert len(store) == 2
    assert store.observe(u64(1, 1), np.array([10, 11])).tolist() == [0, 1]  # fresh entry
    assert store.first_seen(1) == 10  # type: ignore[attr-defined]
    store.observe(u64(4), np.array([15]))  # clock 15: key 2 (first seen 5) expires
    assert store.lookup(u64(1, 2, 3, 4)).tolist() == [2, 0, 1, 1]
    assert len(store) == 3


def test_ttl_boundary_a_query_exactly_ttl_later_is_new(make_store: MakeStore) -> None:
    store = make_store(ttl=10)
    assert store.observe(u64(1, 2), np.array([0, 1])).tolist() == [0, 0]
    assert store.observe(u64(2, 1), np.array([10, 10])).tolist() == [1, 0]
    assert store.observe(u64(2), np.array([11])).tolist() == [0]
    # the same inside one batch: the entry expires between two of its queries
    assert store.observe(u64(3, 3, 3), np.array([20, 29, 30])).tolist() == [0, 1, 0]
    assert store.lookup(u64(1, 2, 3)).tolist() == [0, 0, 1]  # clock 30: only 3 lives


def test_ttl_boundary_holds_in_large_batches(make_store: MakeStore) -> None:
    # batches above the stores' plain-Python size take the vectorized paths
    store = make_store(ttl=10)
    old = np.arange(1, 101, dtype=np.uint64)
    store.observe(old, np.zeros(100, np.int64))
    # 50 stored keys exactly ttl later (new again), 50 fresh ones, no copies in the batch
    batch = np.r_[old[:50], np.arange(1001, 1051, dtype=np.uint64)]
    assert store.observe(batch, np.full(100, 10)).tolist() == [0] * 100
    # one tick earlier they were still alive; with copies in the batch as well
    store = make_store(ttl=10)
    store.observe(old, np.zeros(100, np.int64))
    again = np.r_[old[:50], old[:50]]
    assert store.observe(again, np.full(100, 9)).tolist() == [1] * 50 + [2] * 50


def test_capacity_evicts_exactly_the_excess_oldest_first_seen_first(
    make_store: MakeStore,
) -> None:
    """A full store that receives one new key evicts exactly one entry, the oldest
    first-seen (not the most recently used); a batch of new keys evicts as many."""
    store = make_store(capacity=10)
    for t in range(10):
        store.observe(u64(100 + t), np.array([t]))
    store.observe(u64(100), np.array([10]))  # a repeat: first-seen time stays 0
    assert len(store) == 10
    store.observe(u64(110), np.array([11]))  # 11 keys > 10: the oldest one goes
    assert len(store) == 10
    assert store.lookup(u64(*range(100, 111))).tolist() == [0] + [1] * 10
    store.observe(u64(111, 112, 113), np.array([12, 13, 14]))  # three more: three go
    assert len(store) == 10
    assert store.lookup(u64(*range(100, 114))).tolist() == [0] * 4 + [1] * 10


def test_capacity_ties_in_first_seen_time_evict_the_lower_signed_key_first(
    make_store: MakeStore,
) -> None:
    """Entries first seen at one time are evicted in the order of their keys read as
    signed int64, in every store: 2**63 (the most negative) first, then 2**64 - 1 (-1),
    then 0, 1, ..."""
    store = make_store(capacity=3)
    keys = u64(1, 2**64 - 1, 0, 2**63, 2**63 - 1)
    assert store.observe(keys, np.zeros(5, np.int64)).tolist() == [0] * 5
    assert store.lookup(keys).tolist() == [1, 0, 1, 0, 1]
    store.observe(u64(5), np.array([0]))  # one more at the same time: 0 goes
    assert store.lookup(u64(0, 1, 5, 2**63 - 1)).tolist() == [0, 1, 1, 1]
    store.observe(u64(7), np.array([-1]))  # older than all: the newcomer itself goes
    assert store.lookup(u64(7, 1, 5, 2**63 - 1)).tolist() == [0, 1, 1, 1]
    assert len(store) == 3


def test_in_process_eviction_keeps_every_probe_path_whole() -> None:
    """Eviction empties slots one at a time, in place, and moves later entries back
    along their probe paths: after every one of many evictions at the table's full load (clusters of
    all lengths, wrapping past the table's end), each key of the universe reads the
    count the reference semantics give, and a dropped key reads 0. A hole left in a
    probe path would make a kept key read 0 (plant one: skip the move-back)."""
    from movingtarget.memory.stores import InProcessStore

    rng = np.random.default_rng(7)
    universe = rng.integers(1, 2**63, 6000, dtype=np.uint64)
    store, ref = InProcessStore(capacity=2000), ReferenceStore(None, 2000)
    t = 0
    for _ in range(60):
        batch = universe[rng.integers(0, len(universe), 250)]
        now = list(range(t, t + len(batch)))  # distinct times: no ties to break
        t += len(batch)
        assert store.observe(batch, np.array(now)).tolist() == ref.observe(
            [int(k) for k in batch], now
        )
        want = [ref.count(int(k)) for k in universe]
        assert store.lookup(universe).tolist() == want
        assert len(store) == len(ref.entries)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(
        st.lists(st.sampled_from(POOL), min_size=1, max_size=40), min_size=1, max_size=8
    ),
    ttl=st.one_of(st.none(), st.integers(1, 60)),
    capacity=st.one_of(st.none(), st.integers(1, 25)),
    tick=st.integers(0, 1),
)
def test_matches_the_reference_semantics(
    make_store: MakeStore,
    batches: list[list[int]],
    ttl: int | None,
    capacity: int | None,
    tick: int,
) -> None:
    # tick 1: every query has its own time; tick 0: a batch's queries share one time,
    # so first-seen times tie and eviction follows the shared tie order (signed keys;
    # the pool holds keys of both signs)
    store, ref = make_store(ttl=ttl, capacity=capacity), ReferenceStore(ttl, capacity)
    t = 0
    for batch in batches:
        now = [t + tick * i for i in range(len(batch))]
        t += max(1, tick * len(batch))
        got = store.observe(np.array(batch, dtype=np.uint64), np.array(now))
        assert got.tolist() == ref.observe(batch, now)
    keys = POOL
    assert store.lookup(np.array(keys, dtype=np.uint64)).tolist() == [ref.count(k) for k in keys]
    assert len(store) == len(ref.entries)


def test_bad_bounds_are_config_errors(make_store: MakeStore) -> None:
    for bad in ({"ttl": 0}, {"capacity": -1}):
        with pytest.raises(ConfigError, match="positive integer"):
            make_store(**bad)


# -- store URLs -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgres://x/y", "unknown scheme"),
        ("memcache", "unknown scheme"),
        ("sqlite://", "sqlite:///"),
        ("sqlite://host/file.db", "sqlite:///"),
        ("redis://", "redis://HOST:PORT/DB"),
        ("redis://localhost:port/0", "port must be a number"),
        ("redis://localhost:6379/zero", "database must be a number"),
        ("memory://?ttl=soon", "ttl must be a positive integer"),
        ("memory://?colour=red", "unknown option 'colour'"),
        ("memory://?capacity=5", "capacity=5 but the config says 6"),
        ("memory://elsewhere", "memory://"),
    ],
)
def test_bad_store_urls_are_config_errors_naming_the_url(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match="store URL") as caught:
        open_store(url, capacity=6 if "capacity=5" in url else None)
    assert url in str(caught.value)
    assert words in str(caught.value)


def test_urls_open_the_right_store(tmp_path: Path, redis_url: str) -> None:
    assert isinstance(open_store("memory://?ttl=5"), InProcessStore)
    sqlite_store = open_store(f"sqlite:///{tmp_path}/m.db?namespace=gw&synchronous=full")
    assert isinstance(sqlite_store, SQLiteStore)
    assert (sqlite_store.namespace, sqlite_store.synchronous) == ("gw", "full")
    redis_store = open_store(redis_url + "?capacity=100&namespace=urls")
    assert isinstance(redis_store, RedisStore)
    assert (redis_store.namespace, redis_store.capacity) == ("urls", 100)


def test_unreachable_redis_is_one_unavailable_error_without_the_password() -> None:
    from movingtarget.memory.stores._redis_launcher import free_port

    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    shown = re.escape("Redis store redis://:***@127.0.0.1")
    # an outage, not a bad setting: the gateway answers it with 503
    with pytest.raises(Unavailable, match=shown) as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)
    assert "unreachable" in str(caught.value)


def test_memorize_opens_a_store_from_config_text(tmp_path: Path, redis_url: str) -> None:
    text = f"memorize(on_repeat=abstain, store=sqlite:///{tmp_path}/memo.db?ttl=1000) > argmax"
    memorize = build_mechanisms(text)[0]
    assert isinstance(memorize.store, SQLiteStore)  # type: ignore[attr-defined]
    assert memorize.store.ttl == 1000  # type: ignore[attr-defined]
    assert f"store=sqlite:///{tmp_path}/memo.db?ttl=1000" in memorize.describe()
    tables = [{"type": "memorize", "store": redis_url + "?namespace=memo"}]
    assert isinstance(build_mechanisms(tables)[0].store, RedisStore)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="unknown scheme"):
        build_mechanisms("memorize(store=ftp://x) > argmax")


# -- SQLite: persistence, crashes, several processes, bad files ------------------------
def test_sqlite_keeps_everything_through_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    keys = np.random.default_rng(1).integers(0, 2**64 - 1, 5000, dtype=np.uint64, endpoint=True)
    with SQLiteStore(path, capacity=100_000) as store:
        store.observe(keys, np.arange(5000))
        store.observe(keys[:10], np.full(10, 7000))
    with SQLiteStore(path, capacity=100_000) as again:
        assert len(again) == len(np.unique(keys))
        assert again.lookup(keys[:10]).tolist() == [2] * 10
        assert (again.lookup(keys[10:]) == 1).all()
        assert again.first_seen(int(keys[3])) == 3
        # the clock survived too: expiry and eviction resume where they stopped
        assert again.observe(keys[:1], np.array([7001])).tolist() == [2]


def test_sqlite_namespaces_share_a_file_without_mixing(tmp_path: Path) -> None:
    a = SQLiteStore(tmp_path / "m.db", namespace="a")
    b = SQLiteStore(tmp_path / "m.db", namespace="b")
    a.observe(u64(1, 2), np.arange(2))
    assert b.lookup(u64(1, 2)).tolist() == [0, 0]
    b.observe(u64(1), np.arange(1))
    a.clear()
    assert (len(a), len(b)) == (0, 1)
    with pytest.raises(ConfigError, match="namespace"):
        SQLiteStore(tmp_path / "m.db", namespace="a; DROP TABLE x")


_WRITER = """
import sys
import numpy as np
from movingtarget.memory import SQLiteStore

store = SQLiteStore(sys.argv[1])
for batch in range(1_000_000):
    keys = np.random.default_rng(batch).integers(0, 2**64 - 1, 400, dtype=np.uint64, endpoint=True)
    store.observe(keys, np.full(400, batch))
    print(batch, flush=True)  # acknowledged: observe has returned
"""


def _batch_keys(batch: int) -> np.ndarray:
    rng = np.random.default_rng(batch)
    return rng.integers(0, 2**64 - 1, 400, dtype=np.uint64, endpoint=True)


def test_sqlite_keeps_every_acknowledged_key_through_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    acknowledged: list[int] = []
    for line in writer.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) == 40:
            # mid-stream: the writer is already inside its next transaction
            os.kill(writer.pid, signal.SIGKILL)
            break
    acknowledged += [int(line) for line in writer.stdout]  # printed before it died
    writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert acknowledged == list(range(len(acknowledged)))

    with SQLiteStore(path) as store:
        for batch in acknowledged:
            assert (store.lookup(_batch_keys(batch)) >= 1).all(), f"batch {batch} lost"
        # nothing half-written: the batch in flight is either wholly there or absent
        n = len(acknowledged)
        assert len(store) in (400 * n, 400 * (n + 1))
        if len(store) == 400 * (n + 1):
            assert (store.lookup(_batch_keys(n)) == 1).all()
        else:
            assert (store.lookup(_batch_keys(n)) == 0).all()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()


def test_many_openers_of_one_new_sqlite_file_all_get_in(tmp_path: Path) -> None:
    """Replicas started together open one fresh file at once. Switching it to WAL takes a
    lock SQLite does not wait for, so without retries some openers failed at once with
    "database is locked" (about one opener in 40 here). Four threads, each with its own
    connection, open each of 100 new files at the same moment; all must get in."""
    for trial in range(100):
        path = tmp_path / f"fresh-{trial}.db"

        def open_and_write(i: int, path: Path = path) -> None:
            with SQLiteStore(path) as store:
                store.observe(u64(i + 1), np.zeros(1, np.int64))

        assert at_once(4, open_and_write) == [], f"trial {trial}"
    with SQLiteStore(tmp_path / "fresh-99.db") as store:
        assert len(store) == 4


_SAME_KEYS = """
import sys
import numpy as np
from movingtarget.memory import open_store

store = open_store(sys.argv[1])
keys = np.arange(1, 3001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
order = np.random.default_rng(int(sys.argv[2])).permutation(len(keys))
prior = np.zeros(len(keys), dtype=np.int64)
for chunk in np.array_split(order, 30):
    prior[chunk] = store.observe(keys[chunk], np.zeros(len(chunk), np.int64))
print(",".join(map(str, prior.tolist())))
"""


def _run_concurrently(url: str, n: int = 2) -> list[list[int]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SAME_KEYS, url, str(seed)], stdout=subprocess.PIPE, text=True
        )
        for seed in range(n)
    ]
    outputs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * n
    return [[int(v) for v in out.strip().split(",")] for out in outputs]


def test_sqlite_writers_in_two_processes_get_exact_counts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    a, b = _run_concurrently(url)
    # every key was observed once by each process: exactly one of them saw it first
    assert all(sorted(pair) == [0, 1] for pair in zip(a, b, strict=True))
    assert len(open_store(url)) == 3000


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"these are not the bytes of a database\n" * 100),
        lambda p: p.write_bytes(b"\0" * 24 + b"garbage" * 1000),
    ],
)
def test_a_corrupt_sqlite_file_is_one_data_error_and_is_left_untouched(
    tmp_path: Path, damage: Callable[[Path], object]
) -> None:
    path = tmp_path / "memory.db"
    damage(path)
    before = path.read_bytes()
    with pytest.raises(DataError, match=re.escape(f"SQLite store {path}")) as caught:
        open_store(f"sqlite:///{path}")
    assert "not a readable SQLite database" in str(caught.value)
    assert path.read_bytes() == before


def test_a_damaged_store_page_is_a_data_error_and_the_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    with SQLiteStore(path) as store:
        store.observe(np.arange(1, 20_001, dtype=np.uint64), np.zeros(20_000, np.int64))
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page : 5 * page] = b"\xff" * (2 * page)  # two b-tree pages
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=re.escape(f"SQLite store {path}")):
        store = SQLiteStore(path)
        store.lookup(np.arange(1, 20_001, dtype=np.uint64))
        store.observe(np.arange(1, 20_001, dtype=np.uint64), np.zeros(20_000, np.int64))
    assert path.read_bytes() == bytes(data)


def test_sqlite_in_a_missing_directory_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "memory.db"
    with pytest.raises(DataError, match="does not exist") as caught:
        open_store(f"sqlite:///{path}")
    assert str(path) in str(caught.value)


def test_cli_style_errors_carry_no_traceback_text(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_text("not a database")
    with pytest.raises(DataError) as caught:
        SQLiteStore(path)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_sqlite_path_that_is_a_directory_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(f"SQLite store {tmp_path}")) as caught:
        open_store(f"sqlite:///{tmp_path}")
    assert "unable to open database file" in str(caught.value)


def test_sqlite_writer_locked_out_too_long_gets_a_data_error_and_keeps_state(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    waiting = SQLiteStore(path, timeout=0.2)
    waiting.observe(u64(1, 2), np.arange(2))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(DataError, match="held the write lock"):
            waiting.observe(u64(3), np.array([5]))
        assert waiting.lookup(u64(1, 2, 3)).tolist() == [1, 1, 0]  # readers still read
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert waiting.observe(u64(3), np.array([6])).tolist() == [0]
    assert len(waiting) == 3


def test_missing_redis_server_fails_the_fixture_rather_than_skipping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redis_server

    monkeypatch.setattr(redis_server, "find_redis_server", lambda: None)
    with (
        pytest.raises(pytest.fail.Exception, match="redis-server is not installed"),
        redis_server.running_redis(),
    ):
        pass


# -- Redis: shared between processes ---------------------------------------------------
_FINGERPRINT_AND_OBSERVE = """
import sys
import numpy as np
from movingtarget.memory import ExactFingerprint, open_store

store = open_store(sys.argv[1])
query = (np.arange(784, dtype=np.float32) % 17 / 17).reshape(1, 28, 28)
keys = ExactFingerprint(secret="shared-secret").fingerprint(query)
print(int(store.observe(keys, np.array([int(sys.argv[2])]))[0]))
"""


def test_two_processes_sharing_redis_catch_each_others_repeats(redis_url: str) -> None:
    url = f"{redis_url}?namespace=ab{uuid.uuid4().hex}"

    def run(now: int) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _FINGERPRINT_AND_OBSERVE, url, str(now)],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout)

    assert run(1) == 0  # process A: new
    assert run(2) == 1  # process B: a repeat of what A sent
    query = (np.arange(784, dtype=np.float32) % 17 / 17).reshape(1, 28, 28)
    keys = ExactFingerprint(secret="shared-secret").fingerprint(query)
    assert open_store(url).lookup(keys).tolist() == [2]  # and this process sees both


def test_concurrent_redis_clients_get_exact_counts(redis_url: str) -> None:
    url = f"{redis_url}?namespace=cc{uuid.uuid4().hex}"
    a, b = _run_concurrently(url)
    assert all(sorted(pair) == [0, 1] for pair in zip(a, b, strict=True))
    assert len(open_store(url)) == 3000


def test_redis_refuses_a_bounded_client_on_an_unindexed_namespace(redis_url: str) -> None:
    ns = f"ix{uuid.uuid4().hex}"
    RedisStore(redis_url, namespace=ns).observe(u64(1), np.array([0]))
    with pytest.raises(ConfigError, match="no first-seen index"):
        RedisStore(redis_url, namespace=ns, ttl=5)
    bounded = f"bx{uuid.uuid4().hex}"
    RedisStore(redis_url, namespace=bounded, capacity=5).observe(u64(1), np.array([0]))
    # an unbounded client keeps the index up to date for the bounded ones
    RedisStore(redis_url, namespace=bounded).observe(u64(*range(2, 8)), np.arange(1, 7))
    assert RedisStore(redis_url, namespace=bounded, capacity=5).lookup(u64(1)).tolist() == [1]
    RedisStore(redis_url, namespace=bounded, capacity=5).observe(u64(9), np.array([9]))
    assert len(RedisStore(redis_url, namespace=bounded)) == 5  # the 3 oldest went


def test_redis_re_encodes_a_namespace_indexed_by_an_earlier_version(redis_url: str) -> None:
    """A namespace whose first-seen index holds the keys' own bytes (flag ``1``, written
    before ties were ordered by signed key) is re-encoded by the next write: its
    entries are then evicted and expired like any others, ties in signed-key order."""
    ns = f"ox{uuid.uuid4().hex}"
    store = RedisStore(redis_url, namespace=ns, capacity=4)
    keys = u64(3, 2**64 - 1, 2**63, 9)
    store.observe(keys, np.zeros(4, np.int64))
    # rewrite the index as the earlier version kept it
    age = f"{{{ns}}}:age"
    pipe = store.client.pipeline(transaction=True)
    pipe.delete(age)
    for k in keys.tolist():
        pipe.zadd(age, {int(k).to_bytes(8, "little"): 0})
    pipe.hset(f"{{{ns}}}:meta", "indexed", "1")
    pipe.execute()
    assert len(RedisStore(redis_url, namespace=ns, capacity=4)) == 4  # still opens
    store.observe(u64(5, 6), np.zeros(2, np.int64))  # two more at time 0: 2**63, -1 go
    assert store.lookup(u64(3, 2**64 - 1, 2**63, 9, 5, 6)).tolist() == [1, 0, 0, 1, 1, 1]
    assert store.client.hget(f"{{{ns}}}:meta", "indexed") == b"2"
    assert store.client.zcard(age) == len(store) == 4


def test_redis_buckets_stay_compact_and_are_fixed_per_namespace(redis_url: str) -> None:
    ns = f"bk{uuid.uuid4().hex}"
    first = RedisStore(redis_url, namespace=ns, buckets=1024)
    keys = np.arange(1, 20_001, dtype=np.uint64) * U64(0x9E3779B97F4A7C15)
    first.observe(keys, np.arange(len(keys)))
    # a later client asks for another count but must use the namespace's own
    second = RedisStore(redis_url, namespace=ns, buckets=2**20)
    assert second.buckets == 1024
    assert (second.lookup(keys) == 1).all()
    assert second.first_seen(int(keys[7])) == 7
    # about 20 entries a bucket: every bucket is a compact listpack
    encodings = {first.client.object("encoding", first._bucket_name(b)) for b in range(0, 1024, 97)}
    assert encodings == {b"listpack"}
    second.clear()
    assert len(first) == 0 and (first.lookup(keys) == 0).all()
    assert first.observe(keys[:3], np.zeros(3, np.int64)).tolist() == [0, 0, 0]
    assert RedisStore(redis_url, namespace=ns).buckets == 1024
    with pytest.raises(ConfigError, match="power of two"):
        RedisStore(redis_url, namespace=f"x{ns}", buckets=1000)


@pytest.mark.parametrize("buckets", [1, 256, 2048, 2**17])
def test_redis_bucket_names_agree_between_scripts_and_client(redis_url: str, buckets: int) -> None:
    # first_seen and clear name buckets in Python, observe and lookup in Lua
    store = RedisStore(redis_url, namespace=f"bn{uuid.uuid4().hex}", buckets=buckets)
    keys = np.random.default_rng(buckets).integers(0, 2**64 - 1, 300, np.uint64, endpoint=True)
    store.observe(keys, np.arange(300))
    assert [store.first_seen(int(k)) for k in keys[:50]] == list(range(50))
    store.clear()
    assert (store.lookup(keys) == 0).all()
    assert not store.client.keys(store._base + b"*")  # no bucket left behind


def test_redis_over_a_unix_socket(tmp_path: Path, redis_server: RedisServer) -> None:
    sock = tmp_path / "redis.sock"
    with RedisServer(extra_args=("--unixsocket", str(sock), "--unixsocketperm", "700")):
        store = open_store(f"unix://{sock}?db=1&namespace=sock")
        assert isinstance(store, RedisStore)
        assert store.observe(u64(4, 4), np.arange(2)).tolist() == [0, 1]
        assert store.client.connection_pool.connection_kwargs["db"] == 1
    with pytest.raises(ConfigError, match=re.escape("unix:///path/to/redis.sock?db=N")):
        open_store(f"unix://{sock}?db=one")
