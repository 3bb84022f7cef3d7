"""What durability costs (issue 13: durability as a choice). Not a test: prints Markdown.

    python benchmarks/bench_durability.py            # 2,000 observe calls per setting
    python benchmarks/bench_durability.py --calls 500

One key per ``observe`` call, as a gateway serving one query per request writes its
memory: SQLite with ``durability=process`` (``synchronous=NORMAL``) against ``power``
(``FULL``), and a private ``redis-server`` with ``appendfsync everysec`` (what
``process`` asks of nothing in particular) against ``appendfsync always`` (what
``power`` requires). The settings alternate in rounds, so a busy machine weighs on both;
the ratio is the figure.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from movingtarget.memory import open_store
from movingtarget.memory.stores._redis_launcher import RedisServer


def calls_per_second(store, calls: int, rng: np.random.Generator) -> float:
    keys = rng.integers(1, 2**63, size=calls, dtype=np.uint64)
    start = time.perf_counter()
    for i in range(calls):
        store.observe(keys[i : i + 1], np.array([i], np.int64))
    return calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {
            "redis everysec": RedisServer(
                extra_args=("--appendonly", "yes", "--appendfsync", "everysec", "--dir", tmp)
            ),
            "redis always": RedisServer(
                extra_args=("--appendonly", "yes", "--appendfsync", "always", "--dir", tmp)
            ),
        }
        for server in servers.values():
            server.start()
        try:
            urls = {
                "sqlite process": f"sqlite:///{os.path.join(tmp, 'p.db')}",
                "sqlite power": f"sqlite:///{os.path.join(tmp, 'q.db')}?durability=power",
                "redis everysec": f"{servers['redis everysec'].url}?durability=process",
                "redis always": f"{servers['redis always'].url}?durability=power",
            }
            stores = {name: open_store(url) for name, url in urls.items()}
            for _ in range(args.rounds):
                for name, store in stores.items():
                    results.setdefault(name, []).append(calls_per_second(store, args.calls, rng))
        finally:
            for server in servers.values():
                server.stop()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}\n")
    print("| store | setting | observe calls/s (median of rounds) | vs process |")
    print("|---|---|---|---|")
    for a, b in (("sqlite process", "sqlite power"), ("redis everysec", "redis always")):
        base = float(np.median(results[a]))
        for name in (a, b):
            value = float(np.median(results[name]))
            kind, setting = name.split(" ")
            print(f"| {kind} | {setting} | {value:,.0f} | {value / base:.2f} |")


if __name__ == "__main__":
    main()
