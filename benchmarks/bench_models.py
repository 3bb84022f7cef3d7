"""Model files against native models (issue 17). Not a test: prints Markdown.

    python benchmarks/bench_models.py            # the full run (a few minutes)
    python benchmarks/bench_models.py --quick    # smaller sizes (about a minute)

For the logistic model (digits) and the CNN (Fashion-MNIST), each loaded natively and
from its ONNX export (onnxruntime, CPU, one thread; torch and BLAS limited to one thread
too), in one run on one machine, interleaved (best of rounds), as ratios ONNX / native:

1. ``predict_proba`` on one input (the arena asks with batches of one) and on 256;
2. hello-world arena deployments: the test set attack against ``memorize-abstain``,
   with as many benign queries;
3. the gateway: a real ``movingtarget serve`` per model (the native one served from a
   trusted pickle of the same model, so both are files), single-input and 64-input
   ``/v1/classify`` requests from one client, alternating between the servers;
   p50 latency and requests/s.

The ONNX model gives the same answers (checked first: argmax equal, within 1e-5).
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _common import interleaved, machine
from movingtarget._threads import limit_threads
from movingtarget.arena import Arena, ArenaConfig
from movingtarget.attacks import build_adversary
from movingtarget.datasets import Split, load_dataset
from movingtarget.defenses import build_defense
from movingtarget.gateway.access.base import KeyLimits
from movingtarget.gateway.access.keys import open_keys
from movingtarget.gateway.process import GatewayProcess, running
from movingtarget.models import Model, build_model, load_model_file
from movingtarget.models.export import export_model


def models(quick: bool, root: Path) -> list[tuple[str, Split, Model, Model, Path]]:
    """(label, split, native, onnx, onnx path) for logistic on digits and the CNN."""
    cache = root / "cache"
    digits = load_dataset("digits").split(test_size=0.5, seed=0)
    fashion = load_dataset("fashion-mnist", limit=3000 if quick else 12000).split(
        test_size=0.3, seed=0
    )
    out = []
    for label, split, name, params in (
        ("logistic (digits)", digits, "logistic", {}),
        ("cnn (Fashion-MNIST)", fashion, "cnn", {"epochs": 1, "device": "cpu"}),
    ):
        native = build_model(name, split, cache_dir=cache, **params)
        path = export_model(native, root / f"{name}.onnx", split.x_test)
        onnx = load_model_file(path)
        want, got = native.predict_proba(split.x_test), onnx.predict_proba(split.x_test)
        assert (want.argmax(1) == got.argmax(1)).all() and np.abs(want - got).max() < 1e-5
        out.append((label, split, native, onnx, path))
    return out


def calls(cases: list[Any], quick: bool) -> list[str]:
    rows = ["| model | call | native | ONNX | ONNX / native |", "|---|---|---|---|---|"]
    n_single = 200 if quick else 1000
    for label, split, native, onnx, _ in cases:
        one = split.x_test[:n_single]
        batch = split.x_test[:256]

        def singles(m: Model, x: np.ndarray = one) -> None:
            for i in range(len(x)):
                m.predict_proba(x[i : i + 1])

        t = interleaved(
            {
                "native 1": lambda m=native: singles(m),
                "onnx 1": lambda m=onnx: singles(m),
                "native 256": lambda m=native, b=batch: m.predict_proba(b),
                "onnx 256": lambda m=onnx, b=batch: m.predict_proba(b),
            },
            3 if quick else 7,
        )
        for what, key, per in (("1 input", "1", n_single), ("256 inputs", "256", 1)):
            a, b = t[f"native {key}"] / per, t[f"onnx {key}"] / per
            rows.append(f"| {label} | {what} | {a * 1e6:.0f} µs | {b * 1e6:.0f} µs | {b / a:.2f} |")
    return rows


def arena(cases: list[Any], quick: bool) -> list[str]:
    rows = ["| model | deployment | native | ONNX | ONNX / native |", "|---|---|---|---|---|"]
    m = 200 if quick else 400
    for label, split, native, onnx, _ in cases:

        def deploy(model: Model, split: Split = split) -> None:
            defense = build_defense("memorize-abstain", model)
            attacker = build_adversary(
                "test-set", split.x_test, split.y_test, model.n_classes, seed=1
            )
            Arena(ArenaConfig(queries=m, benign_ratio=1.0)).run(
                defense, [attacker], split.x_test, split.y_test, seed=0
            )

        t = interleaved(
            {"native": lambda mm=native: deploy(mm), "onnx": lambda mm=onnx: deploy(mm)},
            3 if quick else 5,
        )
        rows.append(
            f"| {label} | test-set × memorize-abstain, m = {m} + {m} benign | "
            f"{t['native']:.2f} s | {t['onnx']:.2f} s | {t['onnx'] / t['native']:.2f} |"
        )
    return rows


def gateway(cases: list[Any], quick: bool, root: Path) -> list[str]:
    rows = [
        "| model | request | native p50 | ONNX p50 | native req/s | ONNX req/s | ONNX / native "
        "(req/s) |",
        "|---|---|---|---|---|---|---|",
    ]
    n = 100 if quick else 400
    for label, split, native, _, onnx_path in cases:
        stem = onnx_path.stem
        pkl = root / f"{stem}-native.pkl"
        pkl.write_bytes(pickle.dumps(native))
        keys = f"sqlite:///{root / (stem + '-keys.db')}"
        store = open_keys(keys)
        token = store.create("bench", KeyLimits(rate=0))[1]
        store.close()
        env = {"MOVINGTARGET_SECRET": "bench", "MOVINGTARGET_CACHE": str(root / "cache")}
        common = ["--keys-db", keys, "--defense", "memorize-abstain", "--max-wait-ms", "0"]
        servers = {
            "native": GatewayProcess(
                "--model", str(pkl), "--trust", *common, env=env, log=root / f"{stem}-n.log"
            ),
            "onnx": GatewayProcess(
                "--model", str(onnx_path), *common, env=env, log=root / f"{stem}-o.log"
            ),
        }
        with running(*servers.values()):
            headers = {"Authorization": f"Bearer {token}"}
            rng = np.random.default_rng(0)
            for what, size in (("1 input", 1), ("64 inputs", 64)):
                lat: dict[str, list[float]] = {k: [] for k in servers}
                with httpx.Client(headers=headers, timeout=30) as client:
                    for i in range(n):
                        # distinct queries (fresh noise): memory never answers for the model
                        idx = rng.integers(0, len(split.x_test), size)
                        x = split.x_test[idx] + rng.uniform(0, 1e-3, split.x_test[idx].shape)
                        body = {"inputs": x.astype(np.float32).tolist()}
                        order = list(servers) if i % 2 == 0 else list(servers)[::-1]
                        for key in order:
                            t = time.perf_counter()
                            r = client.post(f"{servers[key].url}/v1/classify", json=body)
                            lat[key].append(time.perf_counter() - t)
                            assert r.status_code == 200, r.text
                p50 = {k: statistics.median(v) for k, v in lat.items()}
                rps = {k: len(v) / sum(v) for k, v in lat.items()}
                rows.append(
                    f"| {label} | {what} | {p50['native'] * 1e3:.2f} ms | "
                    f"{p50['onnx'] * 1e3:.2f} ms | {rps['native']:.0f} | {rps['onnx']:.0f} | "
                    f"{rps['onnx'] / rps['native']:.2f} |"
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    import onnxruntime
    import torch

    limit_threads(1)
    versions = (f"onnxruntime {onnxruntime.__version__}", f"torch {torch.__version__}")
    print(f"machine: {machine(*versions)}")
    print("mode: " + ("quick" if args.quick else "full") + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = models(args.quick, root)
        print("### predict_proba\n")
        print("\n".join(calls(cases, args.quick)) + "\n")
        print("### Arena deployments\n")
        print("\n".join(arena(cases, args.quick)) + "\n")
        print("### Gateway (one client, alternating servers)\n")
        print("\n".join(gateway(cases, args.quick, root)) + "\n")


if __name__ == "__main__":
    main()
