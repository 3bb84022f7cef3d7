"""Arena and defense throughput (issue: core benchmark). Not a test: prints Markdown.

    python benchmarks/bench_arena.py            # digits/logistic and Fashion-MNIST/CNN
    python benchmarks/bench_arena.py --quick    # smaller sizes

Measures, in one run on one machine:
1. defense throughput (queries/s) of `deterministic` and `memorize-abstain` on batches of
   distinct queries, and the overhead of each as a ratio to the bare model's
   `predict_proba` on the same batches;
2. end-to-end arena throughput (adversary batches answered together, benign traffic
   mixed in, event log built);
3. the wall time of the default `movingtarget run`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from _common import best_of, machine
from movingtarget.arena import Arena, ArenaConfig
from movingtarget.attacks import build_adversary
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense
from movingtarget.models import build_model


def distinct_queries(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n distinct inputs: pool inputs with tiny seeded noise (every one a new query)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), n)
    return (x[idx] + rng.uniform(-1e-3, 1e-3, size=(n, *x.shape[1:]))).astype(np.float32)


def defense_rows(label: str, model: object, x: np.ndarray, batch: int) -> list[str]:
    """The bare model and each defense on the same batches, timed in interleaved rounds
    (best of 5 each), so a burst of load elsewhere hits every row alike."""
    batches = [x[i : i + batch] for i in range(0, len(x), batch)]
    n = len(x)

    def bare() -> None:
        for b in batches:
            model.predict_proba(b)  # type: ignore[attr-defined]

    def defended(name: str) -> Callable[[], None]:
        def go() -> None:
            d = build_defense(name, model, seed=0)  # type: ignore[arg-type]
            for b in batches:
                d.answer(b)

        return go

    names = ("deterministic", "memorize-abstain")
    runs: dict[str, Callable[[], None]] = {"bare": bare, **{m: defended(m) for m in names}}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(5):
        for key, fn in runs.items():
            best[key] = min(best[key], best_of(fn, 1))
    rows = [f"| {label} | bare model `predict_proba` | {batch} | {n / best['bare']:,.0f} | 1.00 |"]
    for name in names:
        t = best[name]
        rows.append(f"| {label} | {name} | {batch} | {n / t:,.0f} | {t / best['bare']:.2f} |")
    t_mem, t_det = best["memorize-abstain"], best["deterministic"]
    rows.append(f"| {label} | memorize-abstain ÷ deterministic | {batch} | | {t_mem / t_det:.2f} |")
    return rows


def arena_row(label: str, model: object, split: object, defense: str, queries: int) -> str:
    x, y = split.x_test, split.y_test  # type: ignore[attr-defined]
    # throughput only: benign users may cycle through the small pool
    cfg = ArenaConfig(queries=queries, benign_ratio=1.0, adversary_batch=8192, benign_repeats=True)

    def go() -> None:
        d = build_defense(defense, model, seed=0)  # type: ignore[arg-type]
        a = build_adversary("noisy-repeat", x, y, d.n_classes, seed=0, eps=0.01)
        Arena(cfg).run(d, [a], x, y, seed=0)

    t = best_of(go, 2)
    total = queries * 2
    return f"| {label} | {defense} | arena, batches of 8192 + benign | {total / t:,.0f} |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-default-run", action="store_true")
    args = ap.parse_args()
    n_digits = 200_000 if args.quick else 1_000_000
    n_fashion = 5_000 if args.quick else 20_000

    print(f"Machine: {machine()}\n")
    print("| data / model | defense | batch | queries/s | time ÷ bare model |")
    print("|---|---|---|---|---|")
    digits = load_dataset("digits").split(test_size=0.3, seed=0)
    logistic = build_model("logistic", digits, seed=0)
    for row in defense_rows(
        "digits / logistic", logistic, distinct_queries(digits.x_test, n_digits), 10_000
    ):
        print(row, flush=True)
    fashion = load_dataset("fashion-mnist", limit=20_000).split(test_size=0.3, seed=0)
    cnn = build_model("cnn", fashion, seed=0, device="cpu")
    for row in defense_rows(
        "Fashion-MNIST / CNN", cnn, distinct_queries(fashion.x_test, n_fashion), 1024
    ):
        print(row, flush=True)

    print("\n| data / model | defense | mode | queries/s |")
    print("|---|---|---|---|")
    for defense in ("deterministic", "memorize-abstain"):
        print(
            arena_row(
                "digits / logistic", logistic, digits, defense, 250_000 if args.quick else 1_000_000
            ),
            flush=True,
        )
    for defense in ("deterministic", "memorize-abstain"):
        print(
            arena_row(
                "Fashion-MNIST / CNN", cnn, fashion, defense, 10_000 if args.quick else 30_000
            ),
            flush=True,
        )

    if not args.skip_default_run:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "movingtarget", "run", "--out", tmp],
                check=True,
                capture_output=True,
            )
            print(
                f"\nDefault `movingtarget run` (hello-world, 5 seeds × 4 attacks × "
                f"5 defenses, m = 10,000): {time.perf_counter() - t:.1f} s wall"
            )


if __name__ == "__main__":
    main()
