"""Store throughput and size (issue 3: stores). Not a test: prints Markdown.

    python benchmarks/bench_stores.py                    # 1M and 10M stored keys
    python benchmarks/bench_stores.py --quick            # 100k and 1M, fewer lookups
    python benchmarks/bench_stores.py --sizes 1e6 --stores sqlite,redis

For each store (in-process, Bloom, SQLite, Redis on a private ``redis-server`` on loopback)
the keys are random 64-bit fingerprints, inserted with ``observe`` in batches; at each
size the benchmark measures:

* insert: ``observe`` of new keys, batches of ``--batch`` (keys/s over the segment that
  grew the store to this size);
* lookup: ``lookup`` in batches of ``--batch``, half stored keys and half unseen;
* lookup 1/call and observe 1/call: one key per call, as a gateway serving one query
  per request does (calls/s; observe adds new keys);
* bytes per stored key: the in-process table's arrays, the Bloom filter's bits (one
  filter sized for each size, at ``--bloom-fp``), the SQLite file (after a
  checkpoint), Redis ``used_memory`` growth from INFO.

Targets from the issue: >= 100,000 lookups/s in-process at 10M stored; Redis >= 50,000
lookups/s on loopback with pipelining.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from _common import machine
from movingtarget.memory import BloomStore, InProcessStore, SQLiteStore, Store
from movingtarget.memory.stores._redis_launcher import RedisServer
from movingtarget.memory.stores.redis_store import RedisStore

STORES = ("memory", "bloom", "sqlite", "redis")


@dataclass
class Row:
    store: str
    stored: int
    insert_per_s: float
    lookup_per_s: float
    lookup_one_per_s: float
    observe_one_per_s: float
    bytes_per_key: float


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Bench:
    """Grows one store through the sizes and measures it at each."""

    def __init__(
        self, kind: str, args: argparse.Namespace, workdir: Path, redis_url: str, capacity: int
    ):
        self.kind, self.args, self.workdir, self.redis_url = kind, args, workdir, redis_url
        self.capacity = capacity
        self.rng = np.random.default_rng(0)
        self.inserted = np.zeros(0, dtype=np.uint64)
        self.clock = 0
        self.store: Store = self._open()
        self.base_memory = self._redis_memory()

    def _open(self) -> Store:
        if self.kind == "memory":
            return InProcessStore()
        if self.kind == "bloom":
            return BloomStore(self.capacity, false_positive=self.args.bloom_fp)
        if self.kind == "sqlite":
            return SQLiteStore(self.workdir / "bench.db", namespace="bench")
        return RedisStore(self.redis_url, namespace="bench")

    def _redis_memory(self) -> int:
        if not isinstance(self.store, RedisStore):
            return 0
        return int(self.store.client.info("memory")["used_memory"])

    def _now(self, n: int) -> np.ndarray:
        now = np.arange(self.clock, self.clock + n, dtype=np.int64)
        self.clock += n
        return now

    def _new_keys(self, n: int) -> np.ndarray:
        return self.rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)

    def grow_to(self, size: int, deadline: float) -> tuple[int, float]:
        """Insert new keys until ``size`` are stored (or the deadline); keys/s."""
        batch, start_n, spent = self.args.batch, len(self.inserted), 0.0
        parts = [self.inserted]
        n = start_n
        while n < size and time.monotonic() < deadline:
            keys = self._new_keys(min(batch, size - n))
            now = self._now(len(keys))
            spent += timed(partial(self.store.observe, keys, now))
            parts.append(keys)
            n += len(keys)
        self.inserted = np.concatenate(parts)
        return n, rate(n - start_n, spent)

    def bytes_per_key(self) -> float:
        n = len(self.store)
        if isinstance(self.store, InProcessStore | BloomStore):
            return self.store.nbytes / n
        if isinstance(self.store, SQLiteStore):
            self.store.close()  # the last connection checkpoints the WAL into the file
            size = sum(p.stat().st_size for p in self.workdir.glob("bench.db*"))
            self.store = self._open()
            return size / n
        return (self._redis_memory() - self.base_memory) / n

    def lookups(self) -> tuple[float, float]:
        total = self.args.lookups
        hits = self.inserted[self.rng.integers(0, len(self.inserted), total // 2)]
        probe = np.concatenate([hits, self._new_keys(total - len(hits))])
        self.rng.shuffle(probe)
        batch = self.args.batch
        counts: list[np.ndarray] = []
        spent = timed(
            lambda: counts.extend(
                self.store.lookup(probe[s : s + batch]) for s in range(0, len(probe), batch)
            )
        )
        found = int((np.concatenate(counts) > 0).sum())
        assert found >= len(hits), "a stored key was not found"
        singles = probe[: self.args.single_calls]
        one = timed(lambda: [self.store.lookup(singles[i : i + 1]) for i in range(len(singles))])
        return rate(total, spent), rate(len(singles), one)

    def observe_singles(self) -> float:
        keys = self._new_keys(self.args.single_calls)
        now = self._now(len(keys))
        spent = timed(
            lambda: [self.store.observe(keys[i : i + 1], now[i : i + 1]) for i in range(len(keys))]
        )
        self.inserted = np.concatenate([self.inserted, keys])
        return rate(len(keys), spent)


def run_store(kind: str, args: argparse.Namespace, redis_url: str, sizes: list[int]) -> list[Row]:
    if kind == "bloom" and len(sizes) > 1:
        # a Bloom filter is sized for what it will hold: one filter per size
        return [row for size in sizes for row in run_store(kind, args, redis_url, [size])]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-stores-", dir=args.workdir) as tmp:
        # the one-key observes add keys beyond the size: the filter is sized for them too
        bench = Bench(kind, args, Path(tmp), redis_url, capacity=sizes[0] + args.single_calls)
        deadline = time.monotonic() + args.time_limit
        for size in sizes:
            reached, insert = bench.grow_to(size, deadline)
            if reached < size:
                print(
                    f"# {kind}: stopped at {reached:,} keys (--time-limit {args.time_limit} s)",
                    file=sys.stderr,
                )
                break
            per_key = bench.bytes_per_key()
            lookup, lookup_one = bench.lookups()
            observe_one = bench.observe_singles()
            row = Row(kind, reached, insert, lookup, lookup_one, observe_one, per_key)
            rows.append(row)
            print(f"# {row}", file=sys.stderr, flush=True)
        close = getattr(bench.store, "close", None)
        if close is not None:
            close()
    return rows


def table(rows: list[Row], batch: int) -> str:
    head = (
        f"| store | stored keys | insert keys/s (batches of {batch:,}) "
        f"| lookup keys/s (batches of {batch:,}) | lookup, 1 key/call (/s) "
        "| observe, 1 key/call (/s) | bytes per stored key |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r.store} | {r.stored:,} | {r.insert_per_s:,.0f} | {r.lookup_per_s:,.0f} "
        f"| {r.lookup_one_per_s:,.0f} | {r.observe_one_per_s:,.0f} | {r.bytes_per_key:.1f} |\n"
        for r in rows
    )
    return head + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k and 1M keys, fewer lookups")
    parser.add_argument("--sizes", default=None, help="stored sizes, e.g. 1e6,1e7")
    parser.add_argument("--stores", default=",".join(STORES), help=",".join(STORES))
    parser.add_argument(
        "--bloom-fp", type=float, default=1e-6, help="Bloom store's designed false-positive rate"
    )
    parser.add_argument("--batch", type=int, default=10_000, help="keys per observe/lookup")
    parser.add_argument("--lookups", type=int, default=None, help="keys looked up per size")
    parser.add_argument("--single-calls", type=int, default=None, help="one-key calls per size")
    parser.add_argument(
        "--time-limit", type=float, default=900.0, help="seconds of inserting per store"
    )
    parser.add_argument("--workdir", default=None, help="where the SQLite file goes")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    sizes_text = args.sizes or ("1e5,1e6" if args.quick else "1e6,1e7")
    sizes = sorted(int(float(s)) for s in sizes_text.split(","))
    args.lookups = args.lookups or (100_000 if args.quick else 500_000)
    args.single_calls = args.single_calls or (1_000 if args.quick else 5_000)
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(STORES))
    if unknown:
        parser.error(f"unknown stores {unknown}; choose from {STORES}")

    with RedisServer() as server:
        import redis

        version = str(redis.Redis.from_url(server.url).info("server")["redis_version"])
        info = machine(
            f"SQLite {sqlite3.sqlite_version}",
            f"redis-py {redis.__version__}",
            f"redis-server {version}",
        )
        rows = [row for kind in kinds for row in run_store(kind, args, server.url, sizes)]

    command = "python benchmarks/bench_stores.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    print(f"Command: `{command.strip()}`\n")
    print(f"Machine: {info}\n")
    print(table(rows, args.batch))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": info, "rows": [asdict(r) for r in rows]}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
