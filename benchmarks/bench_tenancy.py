"""What the gateway's multi-tenant memory policy costs and buys, counted in process.

The digits/logistic ``memorize-abstain`` defense, built exactly as ``movingtarget serve``
builds it (:func:`build_served_defense`, ``memory://`` store), answers batches of
queries tagged with client (key) ids and millisecond times. Counted for each cross-key
quorum q:

* the many-account attacker: answers per input when A keys each send it once;
* the repeat-until-refused test set attacker spread over A keys: its wrong-answer rate
  beside ``q·r / (1 + q·r)`` (one new mistake per q answers; q = 0: ``A·r / (1 + A·r)``);
* a popular benign input sent by N untrusted keys: the share refused (expected N − q of N);
* a membership probe by c colluding keys: how often their answers tell whether a victim
  key sent an input (0.5 is a coin flip);
* an eviction flood: a victim's repeats caught after another key floods the memory;
* answering throughput against the same defense on one plain global memory (ratio, one
  run).

Run: ``python benchmarks/bench_tenancy.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine
from movingtarget.answers import ABSTAIN
from movingtarget.defenses import build_defense
from movingtarget.gateway.server.config import GatewayConfig
from movingtarget.gateway.server.service import build_served_defense
from movingtarget.gateway.server.serving import ServedModel, load_served_model
from movingtarget.memory.stores.urls import open_store

KEYS = 10  # accounts of the many-account attacker
POPULAR = 20  # benign keys sending one popular input
CAPACITY = 1_000  # memory bound in the eviction flood


class Clock:
    """Strictly increasing millisecond times, one per query."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def take(self, n: int) -> np.ndarray:
        t = self.now + np.arange(n, dtype=np.int64)
        self.now += n
        return t


def defense_for(served: ServedModel, q: int, **extra: object):  # type: ignore[no-untyped-def]
    config = GatewayConfig(defense="memorize-abstain", cross_key_quorum=q, **extra).check()  # type: ignore[arg-type]
    return build_served_defense(config, served)


def ask(defense, clock: Clock, x: np.ndarray, client: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    clients = np.full(len(x), client, dtype=np.int64)
    return np.asarray(defense.answer(x.astype(np.float32), clients, clock.take(len(x))).labels)


def many_accounts(served: ServedModel, x: np.ndarray, q: int) -> float:
    defense, clock = defense_for(served, q), Clock()
    answered = sum(int((ask(defense, clock, x, k) != ABSTAIN).sum()) for k in range(KEYS))
    return answered / len(x)


def test_set_attack(
    served: ServedModel, x: np.ndarray, y: np.ndarray, q: int, seed: int
) -> tuple[float, float, int]:
    """Wrong-answer rate of the test set attacker that walks its pool once (from key
    0, never re-sending) and repeats each mistake over its keys until refused; the
    rate's prediction for this attacker; the mistakes it found."""
    defense, clock = defense_for(served, q), Clock()
    wrong = sent = found = 0
    for i in np.random.default_rng(seed).permutation(len(x)):
        label = ask(defense, clock, x[i : i + 1], 0)[0]
        sent += 1
        if label == ABSTAIN or label == y[i]:
            continue
        wrong, found = wrong + 1, found + 1
        for k in range(1, KEYS + 1):  # key KEYS is key 0 again: its own repeat
            label = ask(defense, clock, x[i : i + 1], k % KEYS)[0]
            sent += 1
            if label == ABSTAIN:
                break
            wrong += int(label != y[i])
    r = float((served.model.predict_proba(x).argmax(axis=1) != y).mean())
    # per mistake: 1/r pool queries, then per - 1 answered repeats and one refused
    per = KEYS if q == 0 else q
    return wrong / sent, per * r / (1 + per * r), found


def popular(served: ServedModel, x: np.ndarray, q: int) -> float:
    defense, clock = defense_for(served, q), Clock()
    refused = sum(int((ask(defense, clock, x, k) == ABSTAIN).sum()) for k in range(POPULAR))
    return refused / (POPULAR * len(x))


def probe(served: ServedModel, x: np.ndarray, q: int, colluders: int) -> float:
    """Share of inputs whose membership the colluders guess right: half of ``x`` was
    sent by the victim (key 0) first. Their best rule: each colluder sends each input
    once; "sent" when fewer than min(c, q) of them were answered (a victim's send takes
    the place of one colluder in the quorum)."""
    defense, clock = defense_for(served, q), Clock()
    half = len(x) // 2
    ask(defense, clock, x[:half], 0)
    answered = np.zeros(len(x), dtype=np.int64)
    for c in range(1, colluders + 1):
        answered += ask(defense, clock, x, c) != ABSTAIN
    guess = answered < min(colluders, q)
    truth = np.arange(len(x)) < half
    return float((guess == truth).mean())


def flood(served: ServedModel, x: np.ndarray, rng: np.random.Generator, q: int) -> int:
    defense, clock = (
        defense_for(served, q, memory_capacity=CAPACITY, memory_key_capacity=CAPACITY),
        Clock(),
    )
    victim = x[:50]
    ask(defense, clock, victim, 0)
    noise = rng.random((CAPACITY, x.shape[1])).astype(np.float32)
    for start in range(0, CAPACITY, 250):
        ask(defense, clock, noise[start : start + 250], 1)
    return int((ask(defense, clock, victim, 0) == ABSTAIN).sum())


def throughput(served: ServedModel, x: np.ndarray) -> tuple[float, float]:
    """Queries/s of the tenant memory and of one global memory with the same bounds
    (TTL, 1,000,000 entries), batches of 256 from 8 keys, fresh inputs, best of 5 (the
    memories are built outside the timing)."""
    batch, reps = 256, 40
    data = np.random.default_rng(7).random((batch * reps, x.shape[1])).astype(np.float32)
    clients = np.repeat(np.arange(8, dtype=np.int64), batch // 8)
    config = GatewayConfig(defense="memorize-abstain").check()

    def plain():  # type: ignore[no-untyped-def]
        defense = build_defense(config.defense, served.model, seed=0)
        for mech in defense.mechanisms:
            if hasattr(mech, "store"):
                mech.store = open_store("memory://", ttl=config.ttl_ms, capacity=1_000_000)
        return defense

    def rate(make) -> float:  # type: ignore[no-untyped-def]
        best = np.inf
        for _ in range(5):
            defense, clock = make(), Clock()
            ask(defense, clock, data[:1], 99)  # open the memories before timing
            t = time.perf_counter()
            for r in range(reps):
                part = data[r * batch : (r + 1) * batch]
                defense.answer(part, clients, clock.take(batch))
            best = min(best, time.perf_counter() - t)
        return batch * reps / best

    return rate(lambda: build_served_defense(config, served)), rate(plain)


def main() -> None:
    served = load_served_model("digits:logistic")
    from movingtarget.datasets import load_dataset

    split = load_dataset("digits").split(test_size=0.3, seed=0)
    x, y = split.x_test.astype(np.float32), np.asarray(split.y_test)
    print(f"machine: {machine()}")
    print(f"model: {served.name}, {len(x)} held-out digits, {KEYS} attacker keys\n")
    print(
        "| q | answers per input, 10 keys | test set attacker wrong-answer rate "
        "(predicted) | popular input refused, 20 keys | probe accuracy c=1 | c=2 | c=3 "
        "| victim repeats caught after a flood |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for q in (0, 1, 2, 3):
        per_input = many_accounts(served, x, q)
        rate, predicted, found = test_set_attack(served, x, y, q, seed=q)
        pop = popular(served, x[:40], q)
        probes = [probe(served, x[:200], q, c) for c in (1, 2, 3)]
        caught = flood(served, x, rng, q)
        print(
            f"| {q} | {per_input:.2f} | {rate:.4f} ({predicted:.4f}; {found} mistakes) | {pop:.3f} "
            f"({(POPULAR - min(q, POPULAR) if q else 0) / POPULAR:.3f} expected) | "
            + " | ".join(f"{p:.2f}" for p in probes)
            + f" | {caught} of 50 |"
        )
    tenant, plain = throughput(served, x)
    print(
        f"\nthroughput, batches of 256 from 8 keys: tenant memory {tenant:,.0f} queries/s, "
        f"one global memory {plain:,.0f} queries/s, ratio {tenant / plain:.2f}"
    )


if __name__ == "__main__":
    main()
