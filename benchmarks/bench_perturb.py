"""What the per-input attack adapters cost, and how long resilience takes per input.

* Crafting throughput (examples/s) of FGSM (ε = 0.1) and PGD (ε = 0.1, 20 steps) on the
  Fashion-MNIST CNN: through the project's adapter (``wrap_model`` + ``craft``: float32
  cast, ART's global RNG seeded and restored) against ART's own ``PyTorchClassifier``
  on the bare torch module with the same attack and batch size; and through the adapter
  with the outcome measured too (the classes of clean and adversarial inputs, success
  and distances: two forward passes that bare ART does not make). Rounds rotate the
  order so drift hits all; the ratio is per round and overall.
* Resilience time per input: ``run_resilience`` on the default config (digits, logistic;
  both norms, the confidence-threshold sweep and the JSMA matrix included).

Run: ``python benchmarks/bench_perturb.py`` (a few minutes on 2 cores; one torch thread
per core is left to torch's default).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine

N_TRAIN = 6_000
N_ATTACK = 512
ROUNDS = 6


def _bare(module: object, shape: tuple[int, ...]) -> object:
    import torch
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=shape,
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def crafting_rows() -> list[dict[str, object]]:
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

    from movingtarget.attacks.perturb.estimators import wrap_model
    from movingtarget.attacks.perturb.registry import craft
    from movingtarget.datasets import load_dataset
    from movingtarget.models import build_model

    split = load_dataset("fashion-mnist", limit=N_TRAIN).split(test_size=0.2, seed=0)
    model = build_model("cnn", split, seed=0, epochs=1, device="cpu")
    x = np.asarray(split.x_test[:N_ATTACK], dtype=np.float32)
    y = np.asarray(split.y_test[:N_ATTACK], dtype=np.int64)
    adapter = wrap_model(model, clip_values=(0.0, 1.0), input_shape=split.input_shape)
    bare = _bare(model.module, tuple(split.input_shape))
    attacks = {
        "fgsm": (
            {"eps": 0.1},
            lambda: FastGradientMethod(bare, eps=0.1, eps_step=0.1, batch_size=512),
        ),
        "pgd": (
            {"eps": 0.1, "max_iter": 20},
            lambda: ProjectedGradientDescent(
                bare, eps=0.1, eps_step=0.025, max_iter=20, batch_size=512, verbose=False
            ),
        ),
    }
    rows = []
    kinds = ("adapter", "bare", "measured")
    for name, (budget, make_bare) in attacks.items():
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(ROUNDS):
            for which in kinds[r % 3 :] + kinds[: r % 3]:
                t0 = time.perf_counter()
                if which == "bare":
                    make_bare().generate(x, y=np.eye(10, dtype=np.float32)[y])
                else:
                    out = craft(name, adapter, x, y, norm="inf", **budget)
                    if which == "measured":
                        _ = out.success, out.l2
                times[which].append(time.perf_counter() - t0)
        a, b, m = (np.array(times[k]) for k in kinds)
        rows.append(
            {
                "attack": name,
                "adapter": N_ATTACK / a.mean(),
                "bare": N_ATTACK / b.mean(),
                "measured": N_ATTACK / m.mean(),
                "overhead": a.mean() / b.mean() - 1,
                "measured_overhead": m.mean() / b.mean() - 1,
                "per_round": (a / b - 1).tolist(),
            }
        )
    return rows


def resilience_row() -> dict[str, float]:
    from movingtarget.experiment import load_config
    from movingtarget.experiment.resilience import run_resilience

    config = load_config(None)
    t0 = time.perf_counter()
    result = run_resilience(config, config.resilience)
    seconds = time.perf_counter() - t0
    return {
        "inputs": result.inputs,
        "seconds": seconds,
        "per_input_ms": 1e3 * seconds / result.inputs,
    }


def main() -> None:
    import torch

    where = machine(f"torch {torch.__version__}")
    print(f"Command: `python benchmarks/bench_perturb.py`; machine: {where}")
    print()
    print(
        "| attack (Fashion-MNIST CNN, 512 inputs) | adapter examples/s | bare ART examples/s "
        "| adapter overhead | per round | adapter + measured examples/s | its overhead |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in crafting_rows():
        rounds = ", ".join(f"{v:+.1%}" for v in row["per_round"])  # type: ignore[attr-defined]
        print(
            f"| {row['attack']} | {row['adapter']:.0f} | {row['bare']:.0f} | "
            f"{row['overhead']:+.1%} | {rounds} | {row['measured']:.0f} | "
            f"{row['measured_overhead']:+.1%} |"
        )
    res = resilience_row()
    print()
    print(
        f"Resilience, default config: {res['inputs']:.0f} inputs in {res['seconds']:.1f} s "
        f"({res['per_input_ms']:.1f} ms an input; both norms, threshold sweep, JSMA matrix, "
        "centroid detection, the comparison models)."
    )


if __name__ == "__main__":
    main()
