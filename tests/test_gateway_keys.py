"""Gateway parts without HTTP: key stores (SQLite and a real Redis) with their limits,
the token bucket's arithmetic, and micro-batching order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from movingtarget.errors import ConfigError
from movingtarget.gateway.access.base import KeyLimits, KeyStore, token_digest
from movingtarget.gateway.access.keys import open_keys
from movingtarget.gateway.access.limits import BucketState, charge
from movingtarget.gateway.problems import Problem
from movingtarget.gateway.server.batching import MicroBatcher
from movingtarget.memory.stores._redis_launcher import RedisServer
from together import at_once


@pytest.fixture(params=["sqlite", "redis"])
def keys(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "sqlite":
        store = open_keys(f"sqlite:///{tmp_path / 'keys.db'}")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        store = open_keys(server.url, namespace=f"t{tmp_path.name[-20:].replace('-', '_')}")
    yield store
    store.close()


def status(store: KeyStore, token: str, cost: int) -> int:
    try:
        store.authorize(token_digest(token), cost)
    except Problem as p:
        return p.status
    return 200


def test_keys_create_list_revoke(keys: KeyStore):
    rec, token = keys.create("alice", KeyLimits(rate=0))
    grant = keys.authorize(token_digest(token), 5)
    assert (grant.key_id, grant.name) == (rec.id, "alice")
    with pytest.raises(ConfigError, match="already exists"):
        keys.create("alice", KeyLimits())
    second, _ = keys.create("bob", KeyLimits(rate=2, burst=4, quota=10, quota_window=60))
    assert [k.name for k in keys.list_keys()] == ["alice", "bob"]
    assert keys.list_keys()[1].limits == KeyLimits(2.0, 4.0, 10, 60)
    assert second.id != rec.id
    assert keys.revoke("alice").revoked is not None
    assert status(keys, token, 1) == 403
    assert status(keys, "mt_unknown", 1) == 401
    with pytest.raises(ConfigError, match="no key named"):
        keys.revoke("carol")


def test_bucket_and_quota_refuse_with_retry_after(keys: KeyStore):
    _, token = keys.create("slow", KeyLimits(rate=0.001, burst=3))
    assert [status(keys, token, 1) for _ in range(4)] == [200, 200, 200, 429]
    with pytest.raises(Problem) as refused:
        keys.authorize(token_digest(token), 1)
    assert refused.value.kind == "rate-limited"
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 1000
    _, quota = keys.create("quota", KeyLimits(rate=0, quota=5, quota_window=3600))
    assert [status(keys, quota, 2) for _ in range(3)] == [200, 200, 429]
    assert status(keys, quota, 1) == 200  # 5 of 5: a smaller request still fits
    with pytest.raises(Problem) as over:
        keys.authorize(token_digest(quota), 1)
    assert over.value.kind == "quota-limited"


def test_many_openers_of_one_new_sqlite_key_store_all_get_in(tmp_path: Path) -> None:
    """Replicas started together open one fresh key database at once: each must get in
    (switching a new file to WAL used to fail at once for all but one of them)."""
    for trial in range(100):
        url = f"sqlite:///{tmp_path / f'keys-{trial}.db'}"

        def open_and_create(i: int, url: str = url) -> None:
            store = open_keys(url)
            try:
                store.create(f"replica-{i}", KeyLimits())
            finally:
                store.close()

        assert at_once(4, open_and_create) == [], f"trial {trial}"
    store = open_keys(f"sqlite:///{tmp_path / 'keys-99.db'}")
    assert sorted(k.name for k in store.list_keys()) == [f"replica-{i}" for i in range(4)]
    store.close()


def test_feedback_round_trip(keys: KeyStore):
    rec, _ = keys.create("labeler", KeyLimits())
    assert keys.add_feedback(rec.id, [("q1", 3), ("q2", 7)]) == 2
    assert keys.add_feedback(rec.id, [("q1", 4)]) == 1  # a new label replaces the old
    assert sorted((r["query_id"], r["label"]) for r in keys.feedback()) == [("q1", 4), ("q2", 7)]


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 100),
    burst=st.integers(1, 50),
    steps=st.lists(st.tuples(st.floats(0, 5), st.integers(1, 20)), max_size=40),
)
def test_the_bucket_never_overspends(rate: float, burst: int, steps: list[tuple[float, int]]):
    limits = KeyLimits(rate=rate, burst=burst).check()
    state, now, spent = BucketState.full(limits), 0.0, 0
    for dt, cost in steps:
        now += dt
        d = charge(limits, state, cost, now)
        if d.allowed:
            spent += cost
            state = d.state
        else:  # waiting as told is enough
            assert d.retry_after > 0
            assert charge(limits, state, cost, now + d.retry_after + 1e-9).allowed or cost > burst
        assert spent <= burst + rate * now + 1e-6


def test_micro_batches_keep_arrival_order_and_carry_overflow():
    batches: list[list[int]] = []

    def handler(x, clients, times, jobs):
        batches.append(clients.tolist())
        out, i = [], 0
        for job in jobs:
            out.append(x[i : i + len(job.x), 0].tolist())
            i += len(job.x)
        return out

    async def main() -> list[list[float]]:
        b: MicroBatcher[list[float]] = MicroBatcher(handler, max_batch=4, max_wait_ms=50)
        await b.start()
        sizes = [1, 2, 3, 1]  # 1 + 2 fit in a batch of 4, 3 starts the next
        jobs = [
            b.submit(np.full((n, 1), i, np.float32), client=i, time=i) for i, n in enumerate(sizes)
        ]
        results = await asyncio.gather(*jobs)
        await b.stop()
        return results

    results = asyncio.run(main())
    assert results == [[0.0], [1.0, 1.0], [2.0, 2.0, 2.0], [3.0]]
    assert batches == [[0, 1, 1], [2, 2, 2, 3]]


def test_served_model_from_a_spec_or_a_saved_file(tmp_path: Path, monkeypatch):
    import pickle

    from movingtarget.errors import DataError
    from movingtarget.gateway.server.serving import load_served_model

    monkeypatch.setenv("MOVINGTARGET_CACHE", str(tmp_path / "cache"))
    served = load_served_model("digits:logistic")
    assert (served.name, served.input_shape, served.n_classes) == ("digits-logistic", (64,), 10)
    saved = tmp_path / "digits-logistic.pkl"
    saved.write_bytes(pickle.dumps({"model": served.model}))
    # a pickle runs code when loaded: refused unless the operator trusts the file
    with pytest.raises(ConfigError, match="a pickle runs any code"):
        load_served_model(str(saved))
    with pytest.warns(UserWarning, match="loading a pickle"):
        again = load_served_model(str(saved), trust=True)
    assert again.input_shape == (64,) and again.sha256 is not None
    assert again.version == again.sha256[:12]  # a file's version is its bytes' digest
    (tmp_path / "junk.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match="not a model"), pytest.warns(UserWarning):
        load_served_model(str(tmp_path / "junk.pkl"), trust=True)
    with pytest.raises(ConfigError, match="DATASET:MODEL"):
        load_served_model("logistic")
    with pytest.raises(DataError, match="no such model file"):
        load_served_model(str(tmp_path / "missing.pkl"))


def test_a_request_larger_than_the_burst_or_quota_is_413_not_a_retry(keys: KeyStore):
    # a 429 with Retry-After would be retried forever: no wait lets 11 queries through a
    # burst of 10, nor 6 through a quota of 5
    _, token = keys.create("small", KeyLimits(rate=1, burst=10))
    with pytest.raises(Problem) as err:
        keys.authorize(token_digest(token), 11)
    assert err.value.status == 413 and "Retry-After" not in err.value.headers
    assert "can never fit key 'small''s burst of 10 queries" in err.value.message
    assert status(keys, token, 10) == 200  # nothing was charged by the refusal
    _, quota = keys.create("quota", KeyLimits(rate=0, quota=5, quota_window=60))
    assert status(keys, quota, 6) == 413
    assert status(keys, quota, 5) == 200
    assert status(keys, quota, 1) == 429  # this one does fit, later
