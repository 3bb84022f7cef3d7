"""``movingtarget attack URL``: the arena's adversaries against a live gateway.

The same arena, adversaries, pools, metrics and report as a local run; only the
defense is remote (:class:`~movingtarget.attacks.remote.defense.RemoteDefense`). The
results folder has the same files as ``movingtarget run`` — ``logs/*.csv`` (event
log), ``summary.json``, ``runs.json``, ``experiment.json``, ``report.md`` and the plot —
plus ``queries.csv``, which joins each event-log row (by ``t``) with the gateway's
audit log (by ``request_id`` / ``query_id``).

A black-box attacker does not know the model, so the natural error ``r`` and the
analytic prediction are left empty. A white-box attack (``screening``, ``boosted-test-set``
in white-box mode) gets the attacker's exact copy of the served model (``model``,
``--model DATASET:MODEL``), refused unless its version is the one the gateway serves.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from movingtarget.arena.arena import Arena, ArenaConfig
from movingtarget.arena.eventlog import EventLog
from movingtarget.arena.seeds import DeploymentSeeds
from movingtarget.attacks import build_adversary
from movingtarget.attacks.remote.client import GatewayClient
from movingtarget.attacks.remote.defense import RemoteDefense
from movingtarget.datasets import load_dataset
from movingtarget.errors import ConfigError
from movingtarget.experiment.config import ComponentSpec, DefenseSpec, ExperimentConfig
from movingtarget.experiment.runner import (
    Task,
    _json_safe,
    aggregate,
    curve_points,
    make_pools,
    ran_out_at,
)
from movingtarget.metrics.analytic import Prediction
from movingtarget.metrics.fooled import benign_near_false_abstention, fooled_metrics
from movingtarget.metrics.measured import (
    attack_metrics,
    benign_false_abstention,
    cumulative_r_tilde,
    repeat_mask,
)
from movingtarget.metrics.trajectory import trajectory_metrics


@dataclass(frozen=True)
class RemoteAttack:
    """What to run against the gateway at ``url``.

    Examples
    --------
    >>> RemoteAttack("http://127.0.0.1:8000", ["mt_..."], budget=100).attack
    'test-set'
    """

    url: str
    keys: list[str]
    attack: str = "test-set"
    params: dict[str, Any] = field(default_factory=dict)
    dataset: str = "digits"
    budget: int = 1000
    benign_keys: list[str] = field(default_factory=list)
    benign_ratio: float = 0.0
    benign_repeats: bool = False
    duplicate_share: float = 0.05
    seed: int = 0
    test_size: float = 0.3
    split_seed: int = 0
    pools: str = "split"
    max_inputs: int = 256
    max_wait_s: float = 600.0
    #: A white-box attacker's exact copy of the served model: ``DATASET:MODEL`` trained
    #: here with the gateway's split settings (``test_size``, ``split_seed``, model
    #: seed 0). It must have the served model's version, or the run is refused.
    model: str | None = None


def _white_box_copy(spec: RemoteAttack, health: dict[str, Any]) -> Any:
    """The attacker's copy of the served model, checked against the gateway's version."""
    if spec.model is None:
        return None
    from movingtarget.gateway.server.serving import load_served_model

    copy = load_served_model(spec.model, test_size=spec.test_size, split_seed=spec.split_seed)
    served = str(health.get("model_version", ""))
    if copy.version != served:
        raise ConfigError(
            f"--model {spec.model!r} builds version {copy.version}, but the gateway serves "
            f"{health.get('model')!r} version {served or '?'}: a white-box attacker needs "
            "an exact copy (same dataset, model, test size and split seed)"
        )
    return copy.model


@dataclass
class RemoteResult:
    """The event log, the summary row, the join table and how often 429 was waited out."""

    log: EventLog
    row: dict[str, Any]
    run: dict[str, Any]
    queries_csv: str
    refused: int
    waited_s: float


def _check_benign_pool(spec: RemoteAttack, config: ArenaConfig, pool: int) -> None:
    """The arena's benign-pool check, worded with the attack command's own flags."""
    try:
        config.check_benign_pool(pool)
    except ConfigError:
        raise ConfigError(
            f"--benign-ratio {spec.benign_ratio:g} x --budget {spec.budget} = "
            f"{config.benign_queries()} benign queries, but the benign pool of "
            f"{spec.dataset!r} holds {pool} items, so benign users would re-send items beyond "
            "the configured duplicates; lower --benign-ratio or --budget, raise --test-size, "
            "or pass --benign-repeats to allow it"
        ) from None


def run_remote_attack(spec: RemoteAttack, out: str | Path | None = None) -> RemoteResult:
    """Run ``spec``; write the results folder ``out`` (when given)."""
    if spec.benign_ratio > 0 and not spec.benign_keys:
        raise ConfigError("--benign-ratio needs at least one --benign-key")
    clients = [GatewayClient(spec.url, k, max_wait_s=spec.max_wait_s) for k in spec.keys]
    benign = [GatewayClient(spec.url, k, max_wait_s=spec.max_wait_s) for k in spec.benign_keys]
    names = {id(c): f"key{i}" for i, c in enumerate(clients)}
    names.update({id(c): f"benign{i}" for i, c in enumerate(benign)})
    try:
        health = clients[0].health()
        meta = clients[0].metadata()
        n_classes = int(meta.get("parameters", {}).get("n_classes", 0))
        split = load_dataset(spec.dataset).split(test_size=spec.test_size, seed=spec.split_seed)
        served_shape = [int(s) for s in meta["inputs"][0]["shape"][1:]]
        if served_shape != list(split.input_shape):
            raise ConfigError(
                f"dataset {spec.dataset!r} has inputs of shape {list(split.input_shape)}; "
                f"the gateway serves {health['model']!r} with inputs {served_shape}"
            )
        n_classes = n_classes or split.n_classes
        pools = make_pools(split.x_test, split.y_test, spec.pools, spec.split_seed)
        arena_cfg = ArenaConfig(
            queries=spec.budget,
            benign_ratio=spec.benign_ratio,
            duplicate_share=spec.duplicate_share,
            benign_repeats=spec.benign_repeats,
        )
        _check_benign_pool(spec, arena_cfg, len(pools.benign_y))
        seeds = DeploymentSeeds.from_seed(spec.seed)
        adversary = build_adversary(
            spec.attack,
            pools.attacker_x,
            pools.attacker_y,
            n_classes,
            seed=seeds.adversary,
            model=_white_box_copy(spec, health),
            **spec.params,
        )
        defense = RemoteDefense(
            clients,
            benign,
            n_classes=n_classes,
            run=f"{spec.attack}-s{spec.seed}-{secrets.token_hex(3)}",
            name=str(health["defense"]),
            max_inputs=spec.max_inputs,
            key_names=names,
            # an attacker that picks its own accounts: account a goes out under key a
            by_account=int(getattr(adversary, "accounts", 1)) > 1,
        )
        log = Arena(arena_cfg).run(
            defense,  # type: ignore[arg-type]  # the arena needs only answer() and reset()
            [adversary],
            pools.benign_x,
            pools.benign_y,
            seed=seeds.arena,
            inputs=True,
        )
    finally:
        for c in clients + benign:
            c.close()
    attack = ComponentSpec(spec.attack, dict(spec.params))
    defense_spec = DefenseSpec(str(health["defense"]))
    config = ExperimentConfig(
        name=f"remote {spec.attack} against {spec.url}",
        dataset=ComponentSpec(spec.dataset),
        model=ComponentSpec(
            str(health["model"]), label=f"{health['model']} v{health['model_version']} (remote)"
        ),
        defenses=(defense_spec,),
        attacks=(attack,),
        arena=arena_cfg,
        seeds=(spec.seed,),
        test_size=spec.test_size,
        split_seed=spec.split_seed,
        pools=spec.pools,
    )
    supply = len(getattr(adversary, "pool_y", ()))
    run = _run_row(Task(attack, defense_spec, spec.seed), log, supply, pools.attacker_x)
    rows = aggregate([run], float("nan"), config)
    refused = sum(c.refused for c in clients + benign)
    waited = sum(c.waited_s for c in clients + benign)
    result = RemoteResult(log, rows[0], run, defense.sent.to_csv(), refused, waited)
    if out is not None:
        _write(Path(out), config, result, Task(attack, defense_spec, spec.seed).slug, spec)
    return result


def _run_row(task: Task, log: EventLog, supply: int, pool_x: Any = None) -> dict[str, Any]:
    # the same row as experiment.runner.run_task writes to runs.json; a black box has
    # no prediction (the attacker does not know the model)
    curve = cumulative_r_tilde(log, 0)
    source = log.source[log.adversary == 0]
    black_box = Prediction(
        float("nan"), "", "black box: the attacker does not know the model", supply=supply
    )
    at = curve_points(len(curve))
    row: dict[str, Any] = {
        "attack": task.attack.display,
        "defense": task.defense.name,
        "seed": task.seed,
        **attack_metrics(log, 0).as_dict(),
        "repeats": int(repeat_mask(source).sum()),
        "ran_out_at": ran_out_at(source, supply),
        "prediction": black_box.as_dict(),
    }
    row["abstain_benign_false"] = benign_false_abstention(log)
    row["abstain_benign_near"] = benign_near_false_abstention(log)
    row.update(trajectory_metrics(log, 0))
    row.update(fooled_metrics(log, pool_x))
    row["curve_x"] = at.tolist()
    row["curve_y"] = curve[at - 1].tolist() if len(curve) else []
    return row


def _write(
    out: Path, config: ExperimentConfig, result: RemoteResult, slug: str, spec: RemoteAttack
) -> None:
    from movingtarget.report import write_report

    (out / "logs").mkdir(parents=True, exist_ok=True)
    result.log.write(out / "logs" / f"{slug}.csv")
    (out / "queries.csv").write_text(result.queries_csv, encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(_json_safe([result.row]), indent=2) + "\n")
    (out / "runs.json").write_text(json.dumps(_json_safe([result.run])) + "\n")
    experiment = {
        "name": config.name,
        "dataset": config.dataset.display,
        "model": config.model.display,
        "r": None,
        "queries": spec.budget,
        "seeds": [spec.seed],
        "defenses": [d.name for d in config.defenses],
        "attacks": [a.display for a in config.attacks],
        "arena": config.arena.__dict__,
        "gateway": spec.url,
        "rate_limit_waits": result.refused,
        "rate_limit_waited_s": result.waited_s,
    }
    (out / "experiment.json").write_text(json.dumps(_json_safe(experiment), indent=2) + "\n")
    write_report(out)
