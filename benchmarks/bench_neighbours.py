"""Neighbour memory: recall and lookups/s of the exact (flat) and approximate (HNSW,
IVF) FAISS indexes. Not a test: prints Markdown.

    python benchmarks/bench_neighbours.py            # 1,000,000 stored 64-d vectors
    python benchmarks/bench_neighbours.py --quick    # 100,000 stored

Stored vectors: a seeded mixture of Gaussian clusters in 64 dimensions (embeddings of
real inputs are clustered; i.i.d. Gaussian noise is reported too, as the hardest case).
Two kinds of lookups:
* ``near-repeat``: a stored vector plus small noise (what the near-repeat gate asks);
* ``fresh``: a new vector from the same distribution.
Recall: the share of lookups whose nearest stored vector is the flat index's answer.
Lookups are answered in batches of 1,000 on ``--threads`` FAISS threads (default 1:
figures per core; the indexes are built with all cores).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _common import machine
from movingtarget.memory.fingerprints.neighbours import NeighbourIndex, _require_faiss

faiss = _require_faiss()


def clustered(n: int, dim: int, rng: np.random.Generator, centres: int = 1000) -> np.ndarray:
    """``n`` points around ``centres`` random centres (spread 0.3 of the centres' scale)."""
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    return c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)


def timed_search(index: NeighbourIndex, q: np.ndarray) -> tuple[np.ndarray, float]:
    """Ids of the nearest stored vector and lookups per second (batches of 1,000)."""
    ids = np.empty(len(q), dtype=np.int64)
    t = time.perf_counter()
    for start in range(0, len(q), 1000):
        _, found = index.search(q[start : start + 1000], 1)
        ids[start : start + 1000] = found[:, 0]
    return ids, len(q) / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 stored vectors")
    parser.add_argument(
        "--data",
        choices=("clustered", "iid-gaussian", "both"),
        default="clustered",
        help="stored vectors (default: clustered, like real embeddings)",
    )
    parser.add_argument("--hnsw-m", type=int, default=32, help="HNSW graph degree")
    parser.add_argument("--ef-construction", type=int, default=64, help="HNSW build breadth")
    parser.add_argument("--nlist", type=int, default=1024, help="IVF cells")
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads for lookups")
    args = parser.parse_args()
    n = 100_000 if args.quick else 1_000_000
    dim, n_queries = 64, 2000
    rng = np.random.default_rng(0)
    print(f"## Neighbour memory: flat, HNSW and IVF at {n:,} stored {dim}-d vectors\n")
    print(
        f"Machine: {machine(f'FAISS {faiss.__version__}')}.\n\nLookups in batches of 1,000 "
        f"on {args.threads} FAISS thread(s); HNSW M={args.hnsw_m}, "
        f"efConstruction={args.ef_construction}; IVF nlist={args.nlist}.\n"
    )
    print(
        "| data | lookups | index | build s | lookups / s | recall@1 vs flat |\n"
        "|---|---|---|---|---|---|"
    )
    datasets = ("clustered", "iid-gaussian") if args.data == "both" else (args.data,)
    for data in datasets:
        if data == "clustered":
            base = clustered(n, dim, rng)
            fresh = clustered(n_queries, dim, rng)
        else:
            base = rng.standard_normal((n, dim)).astype(np.float32)
            fresh = rng.standard_normal((n_queries, dim)).astype(np.float32)
        near = base[rng.integers(0, n, n_queries)] + 0.01 * rng.standard_normal(
            (n_queries, dim)
        ).astype(np.float32)
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # builds use every core
        t = time.perf_counter()
        flat = NeighbourIndex(dim, "flat")
        flat.add(base)
        flat_build = time.perf_counter() - t
        t = time.perf_counter()
        ivf = NeighbourIndex(dim, "ivf", nlist=args.nlist)
        ivf.add(base)
        ivf_build = time.perf_counter() - t
        t = time.perf_counter()
        hnsw = NeighbourIndex(dim, "hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
        hnsw.add(base)
        hnsw_build = time.perf_counter() - t
        faiss.omp_set_num_threads(args.threads)
        for kind, q in (("near-repeat", near), ("fresh", fresh)):
            # the flat index is slow: time it on the first 1,000 lookups only
            truth, flat_qps = timed_search(flat, q[:1000])
            print(f"| {data} | {kind} | flat | {flat_build:.1f} | {flat_qps:,.0f} | 1.000 |")
            settings: list[tuple[str, NeighbourIndex, float, str, int]] = [
                *(("hnsw", hnsw, hnsw_build, "efSearch", ef) for ef in (16, 32, 64)),
                *(("ivf", ivf, ivf_build, "nprobe", p) for p in (1, 4, 16)),
            ]
            for name, index, build, knob, value in settings:
                if name == "hnsw":
                    index._index.hnsw.efSearch = value
                else:
                    index._index.nprobe = value
                found, qps = timed_search(index, q)
                recall = float((found[:1000] == truth).mean())
                print(
                    f"| {data} | {kind} | {name} ({knob}={value}) | {build:.1f} | "
                    f"{qps:,.0f} | {recall:.3f} |",
                    flush=True,
                )
        del flat, hnsw, ivf, base


if __name__ == "__main__":
    main()
