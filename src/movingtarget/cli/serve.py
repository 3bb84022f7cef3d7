"""``movingtarget serve``, ``movingtarget keys ...`` and ``movingtarget attack URL``.

Registered on the main app by :func:`register`; user errors are
:class:`~movingtarget.errors.MovingTargetError` (one line, exit 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from movingtarget.cli import command_group
from movingtarget.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

keys_app = command_group("keys", "Create, list and revoke the gateway's API keys.")

KeysDb = Annotated[
    str | None,
    typer.Option(
        "--keys-db",
        metavar="URL",
        help="Key store: sqlite:///PATH or redis://HOST:PORT/DB "
        "(default $MOVINGTARGET_KEYS, else sqlite:///movingtarget-keys.db).",
    ),
]
Namespace = Annotated[str, typer.Option(help="Prefix of every key in a shared store.")]


def _shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--input-shape {text!r}: write sizes like 64 or 1,28,28") from None
    if not shape or min(shape) < 1:
        raise ConfigError(f"--input-shape {text!r}: sizes must be >= 1")
    return shape


def _range(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        lo, hi = (float(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(f"--input-range {text!r}: write LO,HI (e.g. 0,1)") from None
    return lo, hi


def serve_metrics(registry: CollectorRegistry, port: int) -> int:
    """Serve the Prometheus ``registry`` on loopback ``port`` in a daemon thread (the
    exporter pattern: no key, so only this host can reach it); returns the port."""
    from prometheus_client import start_http_server

    try:
        server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"--metrics-port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc})"
        ) from None
    return int(server.server_address[1])


def serve(
    model: Annotated[
        str,
        typer.Option(
            metavar="DATASET:MODEL|FILE",
            help="DATASET:MODEL (e.g. digits:logistic) or a model file: .onnx, .pt "
            "(TorchScript), .pt2 (torch.export, needs --trust), .skops, .pkl/.joblib "
            "(needs --trust).",
        ),
    ] = "digits:logistic",
    defense: Annotated[
        str,
        typer.Option(
            metavar="DEFENSE",
            help="A composition name or text: 'memorize(on_repeat=abstain) > argmax'.",
        ),
    ] = "memorize-abstain",
    store: Annotated[
        str,
        typer.Option(
            metavar="URL", help="Memory: memory://, sqlite:///PATH or redis://HOST:PORT/DB."
        ),
    ] = "memory://",
    keys_db: KeysDb = None,
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
    audit: Annotated[Path | None, typer.Option(help="Audit log: one JSON line per query.")] = None,
    max_inputs: Annotated[int, typer.Option(help="Most inputs in one request.", min=1)] = 256,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.", min=1024)] = 4 << 20,
    max_batch: Annotated[int, typer.Option(help="Most queries in one model batch.", min=1)] = 256,
    max_wait_ms: Annotated[
        float, typer.Option(help="Longest wait to fill a model batch (ms).", min=0)
    ] = 1.0,
    memory_ttl: Annotated[
        float,
        typer.Option(
            help="Forget a remembered query this many seconds after first seen (0: never)."
        ),
    ] = 86_400.0,
    memory_capacity: Annotated[
        int,
        typer.Option(
            help="Most distinct queries the shared cross-key pool remembers, oldest evicted "
            "first (0: unbounded; in process the pool takes its full table at start-up: 40-80 "
            "bytes a fingerprint key).",
        ),
    ] = 1_000_000,
    memory_key_capacity: Annotated[
        int,
        typer.Option(
            help="Most distinct queries each key's own history remembers: one key's traffic "
            "never evicts another's (0: unbounded).",
        ),
    ] = 100_000,
    cross_key_quorum: Annotated[
        int,
        typer.Option(
            help="Refuse an untrusted key's query as a cross-key repeat once this many other "
            "keys sent it (0: each key held to its own history only).",
        ),
    ] = 2,
    trusted_key: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-key",
            metavar="NAME",
            help="A key held to its own history only and never shown to other keys (repeatable).",
        ),
    ] = None,
    labeler_key: Annotated[
        list[str] | None,
        typer.Option(
            "--labeler-key",
            metavar="NAME",
            help="A key whose labels (/v1/feedback) repair the defense, for any recent query "
            "(repeatable); other keys' labels are stored and never change an answer.",
        ),
    ] = None,
    repair_window: Annotated[
        int,
        typer.Option(
            help="Recent queries a labeler may label for repair (inputs kept in RAM only).",
        ),
    ] = 100_000,
    labeling_queue_capacity: Annotated[
        int,
        typer.Option(
            help="Most queries the labeling queue holds (asked for a label, waiting for a "
            "labeler; kept in the store with their inputs).",
        ),
    ] = 10_000,
    labeling_queue_per_key: Annotated[
        int, typer.Option(help="Most queries of one key in the labeling queue.")
    ] = 100,
    update_tolerance: Annotated[
        float | None,
        typer.Option(
            help="Labeler keys' labels also update the model (partial_fit: mlp, cnn, a pool "
            "of them), each update kept only while canary accuracy loses at most this much "
            "(0.01: one point), else rolled back and written to the audit log.",
        ),
    ] = None,
    update_steps: Annotated[
        int,
        typer.Option(help="partial_fit passes over each labeled batch of a gated model update."),
    ] = 1,
    canary: Annotated[
        int, typer.Option(help="Held-out test-split items the model-update gate measures.")
    ] = 500,
    secret_file: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="The gateway's secret (its text): keys the moving target's schedule, the "
            "memory's fingerprints and query ids; the same on every replica (default "
            "$MOVINGTARGET_SECRET). A defense with a moving target needs one of the two.",
        ),
    ] = None,
    namespace: Namespace = "mt",
    seed: Annotated[int, typer.Option(help="Seed of the defense's own randomness.")] = 0,
    test_size: Annotated[float, typer.Option(help="Test share of the DATASET split.")] = 0.3,
    split_seed: Annotated[int, typer.Option(help="Seed of the DATASET split.")] = 0,
    model_seed: Annotated[int, typer.Option(help="Seed of the model's training.")] = 0,
    input_shape: Annotated[
        str | None, typer.Option(help="Input shape of a saved model that does not say it: 1,28,28.")
    ] = None,
    trust: Annotated[
        bool,
        typer.Option(
            "--trust",
            help="Load a model file that is read with pickle (.pkl, .joblib, .pt2): it can run "
            "any code it holds, so only a file from a source you trust.",
        ),
    ] = False,
    trusted_type: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-type",
            metavar="TYPE",
            help="A type a .skops file may hold besides those skops trusts (repeatable).",
        ),
    ] = None,
    model_output: Annotated[
        str,
        typer.Option(
            metavar="KIND",
            help="What a model file outputs: auto (read from the graph), logits or probabilities.",
        ),
    ] = "auto",
    input_range: Annotated[
        str | None,
        typer.Option(
            metavar="LO,HI",
            help="The model's input domain, one range for every feature (default: each "
            "feature's training range, widened; none for a saved model).",
        ),
    ] = None,
    out_of_domain: Annotated[
        str,
        typer.Option(
            metavar="MODE",
            help="Inputs outside the domain: refuse (422), clip (to the domain) or off.",
        ),
    ] = "refuse",
    cache_dir: Annotated[Path | None, typer.Option(help="Where trained models are cached.")] = None,
    replica: Annotated[str, typer.Option(help="This replica's name in the audit log.")] = "",
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    threads: Annotated[
        int,
        typer.Option(
            help="BLAS / OpenMP / torch threads of this process (scale with replicas).", min=1
        ),
    ] = 1,
    fd: Annotated[
        int | None,
        typer.Option(help="Serve on this inherited listening socket (supervisors, tests).", min=0),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve GET /metrics without a key on 127.0.0.1:PORT only, with the "
            "per-key series (for a Prometheus scraper on this host; 0: a free port).",
            min=0,
            max=65535,
        ),
    ] = None,
) -> None:
    """Serve a model behind a defense over HTTP (see docs/gateway.md)."""
    import uvicorn

    from movingtarget._threads import limit_threads
    from movingtarget.gateway import Gateway, GatewayConfig, create_app
    from movingtarget.gateway.server.service import memory_banner, repair_banner
    from movingtarget.memory.urls import redact

    if secret_file is not None:
        from movingtarget.gateway.server.secret import ENV, read_secret_file

        # one secret for the whole process: fingerprints and query ids read it from the
        # environment, the moving target's schedule derives its own key from it
        os.environ[ENV] = read_secret_file(secret_file)
        if secret_file.stat().st_mode & 0o077:
            typer.echo(
                f"warning: --secret-file {secret_file} can be read by other users of this "
                f"host: chmod 600 {secret_file}",
                err=True,
            )
    config = GatewayConfig(
        model=model,
        defense=defense,
        store=store,
        keys=keys_db,
        namespace=namespace,
        audit=audit,
        max_inputs=max_inputs,
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        memory_ttl_s=memory_ttl,
        memory_capacity=memory_capacity,
        memory_key_capacity=memory_key_capacity,
        cross_key_quorum=cross_key_quorum,
        trusted_keys=tuple(trusted_key or ()),
        labeler_keys=tuple(labeler_key or ()),
        repair_window=repair_window,
        labeling_queue_capacity=labeling_queue_capacity,
        labeling_queue_per_key=labeling_queue_per_key,
        update_tolerance=update_tolerance,
        update_steps=update_steps,
        canary=canary,
        seed=seed,
        test_size=test_size,
        split_seed=split_seed,
        model_seed=model_seed,
        cache_dir=cache_dir,
        input_shape=_shape(input_shape),
        trust=trust,
        trusted_types=tuple(trusted_type or ()),
        model_output=model_output,
        replica=replica,
        input_range=_range(input_range),
        out_of_domain=out_of_domain,
    )
    gateway = Gateway.from_config(config)
    # after loading the model, so torch is limited too if it loaded it; batches are small,
    # and threads contending with the event loop and the clients for cores stall them
    limit_threads(threads)
    app = create_app(gateway)
    sockets = None
    if fd is not None:
        import socket

        try:
            sockets = [socket.socket(fileno=fd)]
        except OSError as exc:
            raise ConfigError(f"--fd {fd}: not a socket ({exc})") from None
        host, port = sockets[0].getsockname()[:2]
    if metrics_port is not None:
        metrics_port = serve_metrics(gateway.metrics.operator_registry, metrics_port)
        typer.echo(f"metrics (no key) on http://127.0.0.1:{metrics_port}/metrics", err=True)
    typer.echo(
        f"serving {gateway.served.name} (version {gateway.served.version}) behind "
        f"{gateway.defense.describe()} on http://{host}:{port} (memory {redact(store)}, "
        f"keys {redact(gateway.keys.url)})",
        err=True,
    )
    if gateway.served.sha256:
        typer.echo(
            f"model file {gateway.served.source} ({gateway.served.format}, sha256 "
            f"{gateway.served.sha256}), input {gateway.served.input_name!r} "
            f"{list(gateway.served.input_shape)} {gateway.served.datatype}",
            err=True,
        )
    typer.echo(memory_banner(gateway.config, gateway.policy, gateway.defense), err=True)
    typer.echo(repair_banner(gateway), err=True)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)
    )
    server.run(sockets=sockets)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name for the key (the client).")],
    rate: Annotated[
        float, typer.Option(help="Queries per second (token refill); 0: unlimited.", min=0)
    ] = 50.0,
    burst: Annotated[float, typer.Option(help="Bucket size: most queries at once.", min=1)] = 256.0,
    quota: Annotated[
        int | None, typer.Option(help="Most queries per quota window (default: none).", min=1)
    ] = None,
    quota_window: Annotated[
        int, typer.Option(help="Length of the quota window in seconds.", min=1)
    ] = 86_400,
    keys_db: KeysDb = None,
    namespace: Namespace = "mt",
) -> None:
    """Create a key; its token is printed once (only its SHA-256 is stored)."""
    from movingtarget.gateway.access.base import KeyLimits
    from movingtarget.gateway.access.keys import open_keys

    store = open_keys(keys_db, namespace=namespace)
    try:
        record, token = store.create(name, KeyLimits(rate, burst, quota, quota_window))
    finally:
        store.close()
    typer.echo(f"created key {record.name!r} (id {record.id}); token (shown once):", err=True)
    typer.echo(token)


@keys_app.command("list")
def keys_list(
    keys_db: KeysDb = None,
    namespace: Namespace = "mt",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List keys with their limits (never tokens)."""
    from movingtarget.gateway.access.keys import open_keys

    store = open_keys(keys_db, namespace=namespace)
    try:
        records = store.list_keys()
    finally:
        store.close()
    for r in records:
        if as_json:
            typer.echo(json.dumps(r.as_dict()))
            continue
        lim = r.limits
        quota = "none" if lim.quota is None else f"{lim.quota}/{lim.quota_window}s"
        state = "revoked" if r.revoked else "active"
        typer.echo(
            f"{r.id:>4}  {r.name:<24} {state:<8} rate {lim.rate:g}/s  burst {lim.burst:g}  "
            f"quota {quota}"
        )


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    keys_db: KeysDb = None,
    namespace: Namespace = "mt",
) -> None:
    """Revoke a key: its requests get 403 from then on."""
    from movingtarget.gateway.access.keys import open_keys

    store = open_keys(keys_db, namespace=namespace)
    try:
        record = store.revoke(name)
    finally:
        store.close()
    typer.echo(f"revoked key {record.name!r} (id {record.id})")


def audit(
    path: Annotated[Path, typer.Argument(help="An audit log written by serve --audit.")],
    keys_db: KeysDb = None,
    namespace: Namespace = "mt",
    labels: Annotated[
        bool, typer.Option(help="Use the feedback labels in --keys-db for the error on answered.")
    ] = True,
) -> None:
    """Per key: queries, coverage, abstentions by reason, error on answered queries."""
    from movingtarget.gateway.access.keys import open_keys
    from movingtarget.gateway.observability.audit import read_audit, summarize
    from movingtarget.report.tables import fmt

    rows = read_audit(path)
    truth: dict[str, int] = {}
    if labels:
        store = open_keys(keys_db, namespace=namespace)
        try:
            truth = {r["query_id"]: int(r["label"]) for r in store.feedback()}
        finally:
            store.close()
    print(
        "| key | queries | coverage | abstained (by reason) | labeled answered "
        "| error on answered |"
    )
    print("|---|---|---|---|---|---|")
    for key, s in summarize(rows, truth).items():
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(s["abstained"].items())) or "—"
        print(
            f"| {key} | {s['queries']} | {fmt(s['coverage'])} | {reasons} | "
            f"{s['labeled_answered']} | {fmt(s['error_answered'])} |"
        )


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``keys`` and ``attack`` to the main command."""
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")
    app.command("audit")(audit)
    from movingtarget.cli.attack import attack

    app.command("attack")(attack)
