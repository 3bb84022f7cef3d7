"""Gateway throughput and latency over loopback HTTP (issue 4). Not a test: prints Markdown.

    python benchmarks/bench_gateway.py            # the full run (a few minutes)
    python benchmarks/bench_gateway.py --quick    # fewer requests (about a minute or two)

Measures, with real ``movingtarget serve`` processes and an asyncio load generator
(raw HTTP/1.1 keep-alive connections, so the client costs little CPU):

1. requests/s and p50/p99 latency of single-input requests and batches of 64, for the
   undefended model (``deterministic``), exact memorization (``memorize-abstain``) and
   near-repeat memorization (``near-repeat-abstain``, when registered): throughput at
   32 concurrent clients (ten rounds alternating between the servers, in forward and
   reverse order; the ratio to the undefended server is reported pooled and per
   round), latency with one client (requests interleaved across the servers, so noise
   hits all alike), and the defense's own time per request in process. A second
   undefended server (``undefended (A/A)``) runs beside the others as a control: its
   "added" figures are pure measurement noise, and every added p50/p99 comes with a
   bootstrap 95 % interval;
2. that under 200 concurrent clients no request is lost or answered twice (every
   request gets one answer per input, and the audit log holds each query exactly once);
3. throughput with 1, 2 and 4 replicas sharing one Redis (memory and keys), clients
   spread over the replicas.

Every run is bounded in requests and in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _common import machine
from movingtarget.defenses import MECHANISMS
from movingtarget.gateway.access.base import KeyLimits
from movingtarget.gateway.access.keys import open_keys
from movingtarget.gateway.process import GatewayProcess, running
from movingtarget.memory.stores._redis_launcher import RedisServer

# -- a small HTTP/1.1 client ----------------------------------------------------------


class Connection:
    """One keep-alive connection; ``post`` returns (status, body)."""

    def __init__(self, url: str, token: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.token = host, int(port), token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes, request_id: str) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}"
            f"\r\nContent-Type: application/json\r\nX-Request-ID: {request_id}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length")
        )
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


@dataclass
class Load:
    """What one load run measured."""

    requests: int
    seconds: float
    latencies: list[float]
    statuses: Counter[int]
    bodies: dict[str, bytes]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")


async def load(
    urls: list[str],
    token: str,
    requests: list[tuple[str, bytes]],
    concurrency: int,
    max_seconds: float,
    keep: bool = False,
) -> Load:
    """Send ``requests`` (request id, body) from ``concurrency`` clients, each on its own
    connection to ``urls[i % len(urls)]``, until all are sent or ``max_seconds`` pass."""
    queue = iter(requests)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    bodies: dict[str, bytes] = {}
    stop_at = time.perf_counter() + max_seconds

    async def client(i: int) -> None:
        conn = Connection(urls[i % len(urls)], token)
        await conn.open()
        try:
            for rid, body in queue:
                t0 = time.perf_counter()
                status, answer = await conn.post("/v1/classify", body, rid)
                latencies.append(time.perf_counter() - t0)
                statuses[status] += 1
                if keep:
                    if rid in bodies:
                        raise AssertionError(f"request {rid} answered twice")
                    bodies[rid] = answer
                if t0 > stop_at:
                    break
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    return Load(len(latencies), elapsed, latencies, statuses, bodies)


def digits_like(n: int, seed: int) -> np.ndarray:
    """``n`` distinct inputs inside the served model's input domain: real digits (scaled
    to [0, 1]) with a little noise, so none is a repeat and none is refused."""
    from movingtarget.datasets import load_dataset

    rng = np.random.default_rng(seed)
    base = load_dataset("digits").x
    x = base[rng.integers(0, len(base), n)] + rng.uniform(-0.02, 0.02, (n, 64))
    return np.clip(x, 0, 1).astype(np.float32)


def make_requests(n: int, batch: int, seed: int, tag: str) -> list[tuple[str, bytes]]:
    """``n`` requests of ``batch`` distinct digits-like inputs (no repeats anywhere)."""
    x = np.round(digits_like(n * batch, seed).reshape(n, batch, 64), 4)
    return [(f"{tag}-{i}", json.dumps({"inputs": x[i].tolist()}).encode()) for i in range(n)]


# -- scenarios ------------------------------------------------------------------------


def serve(root: Path, name: str, *args: str) -> GatewayProcess:
    env = {"MOVINGTARGET_CACHE": str(root / "cache"), "MOVINGTARGET_SECRET": "bench"}
    return GatewayProcess(*args, env=env, log=root / f"{name}.log")


def new_token(url: str, name: str, namespace: str = "mt") -> str:
    store = open_keys(url, namespace=namespace)
    try:
        return store.create(name, KeyLimits(rate=0).check())[1]
    finally:
        store.close()


async def interleaved_latency(
    targets: list[tuple[str, str]], requests: list[list[tuple[str, bytes]]]
) -> list[list[float]]:
    """One client per target, sending in turn (target 0, 1, 2, 0, 1, ...): every target
    sees the same machine noise, so their latencies compare fairly."""
    conns = [Connection(url, token) for url, token in targets]
    for c in conns:
        await c.open()
    out: list[list[float]] = [[] for _ in targets]
    try:
        for i in range(min(len(r) for r in requests)):
            for k, conn in enumerate(conns):
                rid, body = requests[k][i]
                t0 = time.perf_counter()
                status, _ = await conn.post("/v1/classify", body, rid)
                out[k].append(time.perf_counter() - t0)
                assert status == 200, status
    finally:
        for c in conns:
            await c.close()
    return out


def in_process_cost(defense: str, batch: int, n: int) -> float:
    """Microseconds the defense itself takes per request (no HTTP), distinct queries,
    after a few untimed requests (as the servers are warmed up)."""
    from threadpoolctl import threadpool_limits

    from movingtarget.gateway.server.config import GatewayConfig
    from movingtarget.gateway.server.service import build_served_defense
    from movingtarget.gateway.server.serving import load_served_model

    served = load_served_model("digits:logistic")
    d = build_served_defense(GatewayConfig(defense=defense), served)
    warm = 10
    x = digits_like((warm + n) * batch, batch).reshape(warm + n, batch, 64)
    clients = np.zeros(batch, np.int64)
    with threadpool_limits(1):  # as in the servers (serve --threads 1)
        for i in range(warm + n):
            if i == warm:
                t0 = time.perf_counter()
            d.answer(x[i], clients, np.full(batch, i, np.int64))
        return (time.perf_counter() - t0) / n * 1e6


def added_ci(
    lat: list[float], base: list[float], q: float, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap 95 % interval (ms) of ``percentile(lat, q) - percentile(base, q)``:
    both samples resampled with replacement, independently."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(lat) * 1000, np.asarray(base) * 1000
    ia = rng.integers(0, len(a), (n_boot, len(a)))
    ib = rng.integers(0, len(b), (n_boot, len(b)))
    diff = np.percentile(a[ia], q, axis=1) - np.percentile(b[ib], q, axis=1)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return float(lo), float(hi)


def defense_rows(root: Path, quick: bool, scale: float = 1.0) -> list[dict[str, object]]:
    # the A/A control: a second undefended server, whose "added" latency is pure noise
    defenses = [
        ("undefended", "deterministic"),
        ("undefended (A/A)", "deterministic"),
        ("exact-memorize", "memorize-abstain"),
    ]
    if "near-repeat" in MECHANISMS:
        defenses.append(("near-repeat", "near-repeat-abstain"))
    sizes = (1500, 300, 500) if quick else (6000, 1500, 2000)
    n_single, n_batch, n_latency = (max(int(s * scale), 10) for s in sizes)
    # throughput runs alternate between the servers in many short rounds, in forward
    # then reverse order, so drift and other jobs on the machine hit all alike; each
    # round also gives one ratio to the undefended server, whose spread is reported
    rounds = 4 if quick else 10
    servers, tokens = [], []
    for i, (_, defense) in enumerate(defenses):
        keys = f"sqlite:///{root / f'keys-{i}.db'}"
        tokens.append(new_token(keys, "bench"))
        servers.append(serve(root, f"server-{i}", "--defense", defense, "--keys-db", keys))
    rows = []
    with running(*servers):
        for i, gw in enumerate(servers):
            asyncio.run(load([gw.url], tokens[i], make_requests(100, 1, 1000 + i, f"w{i}"), 8, 30))
        for kind, batch, n in (("single", 1, n_single), ("batch-64", 64, n_batch)):
            reqs = [
                make_requests(n + n_latency, batch, 10 * i + batch, f"s{i}-{kind}")
                for i in range(len(defenses))
            ]
            done = [0] * len(defenses)
            secs = [0.0] * len(defenses)
            ratios: list[list[float]] = [[] for _ in defenses]
            c32: list[list[float]] = [[] for _ in defenses]
            errors = [0] * len(defenses)
            chunk = n // rounds
            for r in range(rounds):
                order = range(len(servers)) if r % 2 == 0 else reversed(range(len(servers)))
                rps = [0.0] * len(servers)
                for i in order:
                    part = reqs[i][r * chunk : (r + 1) * chunk]
                    res = asyncio.run(load([servers[i].url], tokens[i], part, 32, 60))
                    done[i] += res.requests
                    secs[i] += res.seconds
                    rps[i] = res.rps
                    c32[i] += res.latencies
                    errors[i] += sum(v for k, v in res.statuses.items() if k != 200)
                for i in range(len(servers)):
                    ratios[i].append(rps[i] / rps[0])
            lat = asyncio.run(
                interleaved_latency(
                    [(gw.url, tokens[i]) for i, gw in enumerate(servers)],
                    [reqs[i][rounds * chunk :] for i in range(len(servers))],
                )
            )
            for i, (label, defense) in enumerate(defenses):
                rps = done[i] / secs[i]
                rows.append(
                    {
                        "defense": label,
                        "request": kind,
                        "requests": done[i],
                        "rps": rps,
                        "queries_per_s": rps * batch,
                        "round_ratios": ratios[i],
                        "p50_ms": float(np.percentile(lat[i], 50) * 1000),
                        "p99_ms": float(np.percentile(lat[i], 99) * 1000),
                        "p99_ms_c32": float(np.percentile(c32[i], 99) * 1000),
                        "added_p50_ci": added_ci(lat[i], lat[0], 50),
                        "added_p99_ci": added_ci(lat[i], lat[0], 99),
                        "errors": errors[i],
                        "defense_us": in_process_cost(defense, batch, 300 if batch == 1 else 60),
                    }
                )
    return rows


def exactly_once(root: Path, quick: bool, scale: float = 1.0) -> dict[str, object]:
    keys = f"sqlite:///{root / 'keys-once.db'}"
    token = new_token(keys, "bench")
    audit = root / "audit.jsonl"
    per_client = max(int((3 if quick else 10) * scale), 1)
    batch = 4
    reqs = make_requests(200 * per_client, batch, 77, "once")
    with serve(
        root, "once", "--defense", "memorize-abstain", "--keys-db", keys, "--audit", str(audit)
    ) as gw:
        result = asyncio.run(load([gw.url], token, reqs, 200, 120, keep=True))
    sent = {rid for rid, _ in reqs}
    answered = {
        rid for rid, body in result.bodies.items() if len(json.loads(body)["answers"]) == batch
    }
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    per_request = Counter(row["request_id"] for row in lines)
    query_ids = Counter(row["query_id"] for row in lines)
    return {
        "clients": 200,
        "requests": len(reqs),
        "answered_once": len(answered),
        "lost": len(sent - answered),
        "audit_lines": len(lines),
        "audit_requests_complete": sum(1 for r in sent if per_request[r] == batch),
        "duplicated_queries": sum(1 for c in query_ids.values() if c > 1),
        "rps": result.rps,
    }


def replica_rows(root: Path, quick: bool, scale: float = 1.0) -> list[dict[str, object]]:
    n = max(int((1500 if quick else 6000) * scale), 10)
    rows = []
    with RedisServer() as redis:
        token = new_token(redis.url, "bench", namespace="bench")
        args = (
            "--defense",
            "memorize-abstain",
            "--store",
            redis.url,
            "--keys-db",
            redis.url,
            "--namespace",
            "bench",
        )
        procs = [serve(root, f"replica{i}", *args, "--replica", f"r{i}") for i in range(4)]
        with running(*procs):
            for count in (1, 2, 4):
                urls = [p.url for p in procs[:count]]
                reqs = make_requests(n, 1, 500 + count, f"rep{count}")
                result = asyncio.run(load(urls, token, reqs, 64, 60))
                rows.append(
                    {
                        "replicas": count,
                        "requests": result.requests,
                        "rps": result.rps,
                        "p50_ms": result.pct(50),
                        "p99_ms": result.pct(99),
                        "errors": sum(v for k, v in result.statuses.items() if k != 200),
                    }
                )
    return rows


def ci(bounds: object) -> str:
    lo, hi = bounds  # type: ignore[misc]
    return f"{lo:+.2f} to {hi:+.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply request counts")
    args = ap.parse_args()
    described = machine()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        rows = defense_rows(root, args.quick, args.scale)
        once = exactly_once(root, args.quick, args.scale)
        replicas = replica_rows(root, args.quick, args.scale)
        total = time.perf_counter() - t0
    cmd = "python benchmarks/bench_gateway.py" + (" --quick" if args.quick else "")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"Command: `{cmd}`; machine: {described}, at the end {load}; wall time {total:.0f} s.\n")
    print(
        "| defense | request | requests | req/s (32 clients) | queries/s | p50 ms (1 client) "
        "| p99 ms (1 client) | p99 ms (32 clients) | defense µs/request | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['defense']} | {r['request']} | {r['requests']} | {r['rps']:.0f} | "
            f"{r['queries_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['p99_ms_c32']:.1f} | {r['defense_us']:.0f} | {r['errors']} |"
        )
    base = {r["request"]: r for r in rows if r["defense"] == "undefended"}
    print(
        "\n| defense | request | throughput vs undefended | per round: median (range) "
        "| added p50 ms (95 % CI) | added p99 ms, 1 client (95 % CI) | added defense time ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["defense"] == "undefended":
            continue
        b = base[str(r["request"])]
        per_round = np.asarray(r["round_ratios"])
        print(
            f"| {r['defense']} | {r['request']} | {float(r['rps']) / float(b['rps']):.0%} | "
            f"{np.median(per_round):.0%} ({per_round.min():.0%}–{per_round.max():.0%}) | "
            f"{float(r['p50_ms']) - float(b['p50_ms']):+.2f} ({ci(r['added_p50_ci'])}) | "
            f"{float(r['p99_ms']) - float(b['p99_ms']):+.2f} ({ci(r['added_p99_ci'])}) | "
            f"{(float(r['defense_us']) - float(b['defense_us'])) / 1000:+.3f} |"
        )
    print(
        f"\n200 concurrent clients, {once['requests']} requests of 4 inputs: "
        f"{once['answered_once']} answered exactly once, {once['lost']} lost, "
        f"{once['duplicated_queries']} queries duplicated in the audit log "
        f"({once['audit_lines']} lines, {once['audit_requests_complete']} requests complete).\n"
    )
    print("| replicas (one Redis) | requests | req/s (64 clients) | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for r in replicas:
        print(
            f"| {r['replicas']} | {r['requests']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['errors']} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": described,
                    "command": cmd,
                    "defenses": rows,
                    "exactly_once": once,
                    "replicas": replicas,
                },
                indent=2,
            )
        )
    if once["lost"] or once["duplicated_queries"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
