"""Sweep throughput on a Dask ``LocalCluster`` of 2 workers against the process pool of 2
(issue 18). Not a test: prints Markdown.

    python benchmarks/bench_cluster.py                # 2 attacks x 2 defenses x 20 seeds
    python benchmarks/bench_cluster.py --seeds 5      # smaller

Both run the same experiment (digits, logistic, the test set and noisy-repeat attacks
against deterministic and memorize-abstain, ``m`` queries) through
:func:`~movingtarget.experiment.run_experiment` into a fresh results folder, so each time
is what a user waits for: the split's model trained (cached after the first run), the
deployments, their records and event logs, the summary. The cluster's time includes
starting the ``LocalCluster`` (its workers are new processes that import movingtarget
and compile its numba loops) and scattering the model to them; that start-up is also
timed alone, and a third figure sends the sweeps to a ``LocalCluster`` already running
(by its ``tcp://`` address, after one sweep that warmed its workers). Rounds alternate
the two (pool first, then cluster) and each side keeps its best round. The two
summaries are checked byte-identical.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import machine
from movingtarget.experiment import load_config, run_experiment
from movingtarget.experiment.cluster import open_client, parse_cluster

CONFIG = """
name = "bench-cluster"
test_size = 0.5
defenses = ["deterministic", "memorize-abstain"]

[dataset]
name = "digits"

[model]
name = "logistic"

[[attacks]]
name = "test-set"

[[attacks]]
name = "noisy-repeat"
eps = 0.03
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import distributed

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bench.toml").write_text(CONFIG)
        config = load_config(
            str(root / "bench.toml"), [f"seeds={args.seeds}", f"arena.queries={args.queries}"]
        )
        n = len(config.seeds) * len(config.attacks) * len(config.defenses)
        print(f"machine: {machine(f'distributed {distributed.__version__}')}\n")
        cache = root / "cache"
        run_experiment(config, root / "warm", workers=1, cache_dir=cache)  # trains, caches
        best = {"pool": float("inf"), "cluster": float("inf")}
        for r in range(args.rounds):
            for side in ("pool", "cluster"):
                out = root / f"{side}{r}"
                t = time.perf_counter()
                if side == "pool":
                    run_experiment(config, out, workers=2, cache_dir=cache)
                else:
                    run_experiment(config, out, cluster="local:2", cache_dir=cache)
                best[side] = min(best[side], time.perf_counter() - t)
            same = (root / f"pool{r}/summary.json").read_bytes() == (
                root / f"cluster{r}/summary.json"
            ).read_bytes()
            assert same, "the two summaries differ"
        t = time.perf_counter()
        with open_client(parse_cluster("local:2")):
            pass
        start = time.perf_counter() - t
        # steady state: sweeps sent to a LocalCluster that is already up, by its address
        # (as to any running scheduler), after one sweep that imported and compiled there
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=":0"
        ) as running:
            address = running.scheduler_address
            run_experiment(config, root / "warmup", cluster=address, cache_dir=cache)
            best["running"] = float("inf")
            for r in range(args.rounds):
                t = time.perf_counter()
                run_experiment(config, root / f"running{r}", cluster=address, cache_dir=cache)
                best["running"] = min(best["running"], time.perf_counter() - t)

    pool, cluster, running_ = (n / best[k] for k in ("pool", "cluster", "running"))
    print(f"{n} deployments of m = {args.queries}, best of {args.rounds} rounds each\n")
    print("| runner | wall (s) | deployments / s |")
    print("|---|---|---|")
    print(f"| process pool, 2 workers | {best['pool']:.2f} | {pool:.1f} |")
    print(f"| Dask LocalCluster, 2 workers | {best['cluster']:.2f} | {cluster:.1f} |")
    print(
        f"| the same, cluster already running (tcp://) | {best['running']:.2f} | {running_:.1f} |"
    )
    print(
        f"\ncluster / pool throughput: **{cluster / pool:.2f} x** with start-up, "
        f"**{running_ / pool:.2f} x** on a running cluster"
    )
    print(f"LocalCluster start and close alone: {start:.2f} s; summaries byte-identical")


if __name__ == "__main__":
    main()
