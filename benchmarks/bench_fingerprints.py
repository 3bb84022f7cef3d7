"""Fingerprint cost per query and bytes per stored query, per fingerprint kind.
Not a test: prints Markdown.

    python benchmarks/bench_fingerprints.py            # batches of 4,096
    python benchmarks/bench_fingerprints.py --quick    # batches of 512

For 28x28 (Fashion-MNIST-like) and 32x32x3 (CIFAR-like) inputs in [0, 1]:
* ``exact``: the keyed multilinear hash of the canonical bytes (one uint64);
* ``robust``: noise-robust band keys (numpy; and the torch path on the CPU, and on a
  GPU when one is present);
* ``neighbours``: the random-projection embedding that the neighbour memory stores
  (64 float32 values) and the FAISS flat-index lookup is benchmarked separately in
  ``bench_neighbours.py``.
One BLAS / torch thread, so the figures are per core.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import numpy as np

from _common import best_of, machine
from movingtarget.memory.fingerprints.exact import ExactFingerprint
from movingtarget.memory.fingerprints.neighbours import RandomProjectionEncoder
from movingtarget.memory.fingerprints.robust import RobustFingerprint
from movingtarget.memory.stores import InProcessStore
from movingtarget.memory.stores.bloom import BloomStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    torch = None
    try:
        import torch as _torch

        _torch.set_num_threads(1)
        torch = _torch
    except ImportError:
        pass
    n = 512 if args.quick else 4096
    rng = np.random.default_rng(0)
    shapes = {"28x28": (1, 28, 28), "32x32x3": (3, 32, 32)}
    exact, robust = ExactFingerprint(secret=b"bench"), RobustFingerprint(secret=b"bench")
    encoder = RandomProjectionEncoder(64, seed=0)
    rows = []
    for label, shape in shapes.items():
        # 8-bit images, as a model receives them
        x = (rng.integers(0, 256, (n, *shape)) / 255).astype(np.float32)
        kinds: list[tuple[str, Callable[[], object], int]] = [
            ("exact", partial(exact.fingerprint, x), 8),
            ("robust (numpy)", partial(robust.fingerprint, x), robust.bytes_per_query),
            ("neighbours embedding (64-d)", partial(encoder.encode, x), 64 * 4),
        ]
        if torch is not None:
            xt = torch.from_numpy(x)
            kinds.append(("robust (torch, cpu)", partial(robust.fingerprint, xt), 128))
            if torch.cuda.is_available():
                gpu = RobustFingerprint(secret=b"bench", device="cuda")
                xg = xt.cuda()
                gpu.fingerprint(xg)
                kinds.append(("robust (torch, cuda)", partial(gpu.fingerprint, xg), 128))
        for name, fn, size in kinds:
            fn()  # warm-up: keys and constants are made on the first call
            seconds = best_of(fn, 5)
            rows.append((label, name, n, 1e6 * seconds / n, n / seconds, size))
    print(f"## Fingerprint cost per query\n\nMachine: {machine()}; one thread.\n")
    print("| input | fingerprint | batch | µs / query | queries / s | bytes stored / query |")
    print("|---|---|---|---|---|---|")
    for label, name, batch, us, qps, size in rows:
        print(f"| {label} | {name} | {batch} | {us:.2f} | {qps:,.0f} | {size} |")
    print(
        "\nBytes stored: the fingerprint payload a store keeps per query (8 per uint64 key; "
        "robust: 16 band keys; neighbours: 64 float32 values in the FAISS index)."
    )
    store_footprint(100_000 if args.quick else 1_000_000)


def store_footprint(n: int) -> None:
    """Store bytes per stored query for exact and robust fingerprints of ``n`` distinct
    queries: the in-process table (keys, counts, first-seen times and its free slots)
    and the Bloom store (membership bits, sized for the ``n`` queries at fp 1e-6)."""
    x = np.random.default_rng(1).random((n, 64), dtype=np.float32)
    print(f"\n### Store footprint, {n:,} distinct queries stored\n")
    print(
        "| fingerprint | keys / query | payload bytes / query "
        "| in-process store bytes / query | Bloom store (fp 1e-6) bytes / query "
        "| Bloom false positives on 4,000,000 fresh keys (design: 4) |"
    )
    print("|---|---|---|---|---|---|")
    kinds: list[tuple[str, ExactFingerprint | RobustFingerprint]] = [
        ("exact", ExactFingerprint(secret=b"bench")),
        ("robust (bands=16, rows=12; default)", RobustFingerprint(secret=b"bench")),
        ("robust (bands=8, rows=10)", RobustFingerprint(bands=8, rows=10, secret=b"bench")),
    ]
    fresh = np.random.default_rng(2).integers(0, 2**64, 4_000_000, dtype=np.uint64)
    for name, fp in kinds:
        keys = fp.fingerprint(x).reshape(-1)
        per = len(keys) // n
        now = np.zeros(len(keys), dtype=np.int64)
        table = InProcessStore()
        table.observe(keys, now)
        bloom = BloomStore(len(keys))
        bloom.observe(keys, now)
        false = int(bloom.lookup(fresh).sum())
        print(
            f"| {name} | {per} | {8 * per} | {table.nbytes / n:.0f} "
            f"| {bloom.nbytes / n:.0f} | {false} |"
        )


if __name__ == "__main__":
    main()
