"""What the query-attack bridge costs: a bridged ART attack in the arena against the same
attack run directly on the bare model, in one run. Not a test: prints Markdown.

    python benchmarks/bench_query.py

Square and HopSkipJump (ART, untargeted) on digits against the ``logistic`` model (the
cheapest model, so the bridge's fixed cost per ask weighs most) and ``torch-mlp``: the
same attack function (:class:`~movingtarget.attacks.query.art.ArtAttack`) runs on the
same source inputs, once with ``predict`` answering from the model directly (one-hot
classes, as the arena answers) and once bridged into the arena (a coroutine, the
``deterministic`` defense, the event log, no benign traffic, no cache so both make
the same queries). Throughput is model queries per second; rounds alternate the order
so drift hits both, and the overhead is the ratio of the means. Then the remote
attacker (``movingtarget attack``) against a local gateway: queries per second of the
test set attack and of a bridged Square over loopback HTTP.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine

QUERIES = 2000
ROUNDS = 4
BUDGETS: dict[str, dict[str, Any]] = {
    "square": {"max_iter": 200},
    "hopskipjump": {"max_iter": 5, "max_eval": 200, "init_eval": 20},
}


class _Spent(BaseException):
    """The direct run's budget is spent (a BaseException, as the bridge's)."""


def _direct(name: str, model: Any, x: np.ndarray, y: np.ndarray, k: int) -> tuple[int, float]:
    from movingtarget.attacks.query.art import ArtAttack
    from movingtarget.attacks.query.bridge import Sources

    attack = ArtAttack(name, x.shape[1:], k, (0.0, 1.0), **BUDGETS[name])
    eye = np.eye(k, dtype=np.float32)
    sent = 0

    def predict(batch: np.ndarray) -> np.ndarray:
        nonlocal sent
        if sent >= QUERIES:  # the last batch may overshoot: times are per query
            raise _Spent
        sent += len(batch)
        return eye[np.asarray(model.predict_proba(batch)).argmax(axis=1)]

    t0 = time.perf_counter()
    try:
        for i in range(len(x)):
            sources = Sources(np.array([i]), x[i : i + 1], y[i : i + 1], np.array([-1]), i)
            attack(predict, sources)
    except _Spent:
        pass
    return sent, time.perf_counter() - t0


def _bridged(name: str, model: Any, x: np.ndarray, y: np.ndarray, k: int) -> tuple[int, float]:
    from movingtarget.arena import Arena, ArenaConfig
    from movingtarget.attacks import build_adversary
    from movingtarget.defenses import build_defense

    defense = build_defense("deterministic", model)
    adversary = build_adversary(name, x, y, k, seed=0, cache=False, **BUDGETS[name])
    arena = Arena(ArenaConfig(queries=QUERIES, benign_ratio=0.0))
    t0 = time.perf_counter()
    log = arena.run(defense, [adversary], x[:0], y[:0], seed=0)
    return len(log), time.perf_counter() - t0


def remote_rows() -> list[dict[str, Any]]:
    """Queries per second of ``movingtarget attack`` (the remote attacker: one HTTP
    request per proposal) against a local gateway serving digits:logistic."""
    import tempfile

    from bench_gateway import new_token, serve
    from movingtarget.attacks.remote.attack import RemoteAttack, run_remote_attack
    from movingtarget.gateway.process import running

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keys = f"sqlite:///{root / 'keys.db'}"
        token = new_token(keys, "attacker")
        gateway = serve(root, "gateway", "--defense", "memorize-abstain", "--keys-db", keys)
        with running(gateway):
            for attack, budget in (("test-set", 1000), ("square", 500)):
                t0 = time.perf_counter()
                result = run_remote_attack(
                    RemoteAttack(gateway.url, [token], attack=attack, budget=budget)
                )
                secs = time.perf_counter() - t0
                rows.append({"attack": attack, "queries": len(result.log), "seconds": secs})
    return rows


MODELS = ("logistic", "torch-mlp")


def main() -> None:
    from movingtarget.datasets import load_dataset
    from movingtarget.models import build_model

    split = load_dataset("digits").split(test_size=0.3, seed=0)
    x, y = split.x_test, np.asarray(split.y_test, dtype=np.int64)
    k = split.n_classes
    print(f"Command: `python benchmarks/bench_query.py`; machine: {machine()}\n")
    print(
        "| attack | model (digits) | queries | direct queries/s | bridged queries/s "
        "| bridge overhead | per round |"
    )
    print("|---|---|---|---|---|---|---|")
    for model_name in MODELS:
        model = build_model(model_name, split, seed=0)
        for name in BUDGETS:
            times: dict[str, list[float]] = {"direct": [], "bridged": []}
            counts: dict[str, int] = {}
            for r in range(ROUNDS):
                order = ("direct", "bridged") if r % 2 == 0 else ("bridged", "direct")
                for which in order:
                    run = _direct if which == "direct" else _bridged
                    n, secs = run(name, model, x, y, k)
                    counts[which] = n
                    times[which].append(secs / n)
            d, b = np.array(times["direct"]), np.array(times["bridged"])
            rounds = ", ".join(f"{v:+.0%}" for v in b / d - 1)
            print(
                f"| {name} | {model_name} | {counts['bridged']} | {1 / d.mean():,.0f} | "
                f"{1 / b.mean():,.0f} | {b.mean() / d.mean() - 1:+.1%} | {rounds} |"
            )
    print("\n| remote attacker (memorize-abstain gateway, loopback) | queries | queries/s |")
    print("|---|---|---|")
    for row in remote_rows():
        print(f"| {row['attack']} | {row['queries']} | {row['queries'] / row['seconds']:,.0f} |")


if __name__ == "__main__":
    main()
