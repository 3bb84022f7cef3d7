"""The gateway's corrections and labeling queue in each back end (in process, a SQLite
file, a real ``redis-server``): the latest label wins, the queue's bounds and
de-duplication hold, and a second client of the same store (another replica, or the
process after a restart) sees the same state."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from movingtarget.errors import ConfigError, DataError
from movingtarget.memory.asked import QueueEntry, open_queue
from movingtarget.memory.corrections import open_labels
from redis_server import running_redis


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        with running_redis() as redis:
            yield redis.url


def _entry(i: int, client: int) -> QueueEntry:
    x = np.arange(4, dtype=np.float32) + i
    return QueueEntry(f"q{i}", 2**64 - 1 - i, client, 1000 + i, "repeat", x)


def _again(url: str, make: Callable[[], Any]) -> Any:
    # a second client of the same store: what another replica, or a restart, opens
    return make() if not url.startswith("memory") else None


def test_labels_latest_wins_and_a_second_client_sees_them(store_url: str) -> None:
    labels = open_labels(store_url, namespace="t")
    keys = np.array([7, 2**64 - 3, 7], np.uint64)
    labels.add(keys, np.array([1, 2, 3]))
    assert labels.lookup(np.array([[7, 8], [2**64 - 3, 7]], np.uint64)).tolist() == [
        [3, -1],
        [2, 3],
    ]
    assert len(labels) == 2
    labels.add(np.array([7, 9], np.uint64), np.array([4, 5]))  # one relabeled, one new
    assert len(labels) == 3 and labels.lookup(np.array([7], np.uint64)).tolist() == [4]
    other = _again(store_url, lambda: open_labels(store_url, namespace="t"))
    if other is not None:
        assert other.lookup(np.array([7, 2**64 - 3], np.uint64)).tolist() == [4, 2]
        assert len(other) == 3
        assert len(open_labels(store_url, namespace="other")) == 0  # namespaces apart


def test_the_queue_keeps_its_bounds_and_one_entry_per_input(store_url: str) -> None:
    queue = open_queue(store_url, namespace="t", capacity=4, per_client=2)
    offered = [_entry(1, 7), _entry(2, 7), _entry(3, 7), _entry(4, 8)]
    same_input = QueueEntry("q9", _entry(4, 9).fp, 9, 2000, "near-repeat", _entry(4, 9).x)
    assert queue.offer([*offered, same_input]) == 3  # client 7 over its 2; q9 already queued
    assert queue.offer([_entry(5, 9), _entry(6, 9)]) == 1  # full at 4
    assert [e.query_id for e in queue.pending(10)] == ["q1", "q2", "q4", "q5"]
    got = queue.get(["q2", "q3", "nope"])
    assert list(got) == ["q2"] and np.array_equal(got["q2"].x, _entry(2, 7).x)
    assert got["q2"].reason == "repeat" and got["q2"].client == 7 and got["q2"].time == 1002
    assert queue.remove(["q1", "q1", "nope"]) == 1
    assert queue.offer([_entry(3, 7)]) == 1  # client 7's slot and the room are free again
    other = _again(
        store_url, lambda: open_queue(store_url, namespace="t", capacity=4, per_client=2)
    )
    if other is not None:
        assert sorted(e.query_id for e in other.pending(10)) == ["q2", "q3", "q4", "q5"]
        assert other.offer([_entry(7, 10)]) == 0  # the bound holds across clients


def test_bad_queue_bounds_and_unreadable_files_are_one_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--labeling-queue-capacity must be an integer >= 1"):
        open_queue("memory://", namespace="t", capacity=0)
    with pytest.raises(ConfigError, match="bloom:// remembers whether"):
        open_labels("bloom://", namespace="t")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DataError, match="not a readable SQLite database"):
        open_labels(f"sqlite:///{junk}", namespace="t")
    assert junk.read_bytes() == b"not a database at all" * 100  # left untouched
