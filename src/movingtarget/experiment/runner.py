"""Run an experiment: every attack against every defense, for every seed, in parallel."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.arena.arena import Arena
from movingtarget.attacks import NO_TARGET, build_adversary
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense
from movingtarget.defenses.near_repeat import calibrate_defense
from movingtarget.experiment.config import ComponentSpec, DefenseSpec, ExperimentConfig
from movingtarget.metrics.analytic import predict
from movingtarget.metrics.measured import (
    attack_metrics,
    benign_false_abstention,
    cumulative_r_tilde,
    natural_error,
)
from movingtarget.models import Model, build_model

#: Points kept per cumulative-error curve in the results (the event logs keep all).
CURVE_POINTS = 200
#: Every query up to this one is a curve point: the search for the first mistake shows.
CURVE_DENSE = 100


def curve_points(n: int) -> NDArray[np.int64]:
    """Queries (1-based) at which a cumulative curve of ``n`` queries is kept: every one up
    to :data:`CURVE_DENSE`, then evenly spaced on a log axis up to ``n`` (always kept),
    :data:`CURVE_POINTS` at most.

    >>> pts = curve_points(10_000)
    >>> pts[:5].tolist(), int(pts[-1]), len(pts) <= CURVE_POINTS
    ([1, 2, 3, 4, 5], 10000, True)
    """
    if n <= 0:
        return np.zeros(0, np.int64)
    dense = np.arange(1, min(n, CURVE_DENSE) + 1)
    if n <= CURVE_DENSE:
        return dense.astype(np.int64)
    spread = np.geomspace(CURVE_DENSE, n, CURVE_POINTS - CURVE_DENSE + 1)[1:]
    pts = np.unique(np.concatenate([dense, np.round(spread).astype(np.int64), [n]]))
    return pts.astype(np.int64)


#: Training inputs that calibrate approximate memories (thresholds for a benign rate).
CALIBRATION_SIZE = 2000


@dataclass(frozen=True)
class Pools:
    """The attacker's labeled pool and the benign users' pool (from the test split)."""

    attacker_x: NDArray[np.float32]
    attacker_y: NDArray[np.int64]
    benign_x: NDArray[np.float32]
    benign_y: NDArray[np.int64]


def make_pools(x: NDArray[np.float32], y: NDArray[np.int64], how: str, seed: int) -> Pools:
    """Disjoint, stratified halves of the test split (``split``), or both the whole of it."""
    if how == "shared":
        return Pools(x, y, x, y)
    rng = np.random.default_rng([seed, 0x9001])
    attacker = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        attacker[idx[: (len(idx) + 1) // 2]] = True
    return Pools(x[attacker], y[attacker], x[~attacker], y[~attacker])


@dataclass(frozen=True)
class Task:
    """One deployment: an attack, a defense, a seed."""

    attack: ComponentSpec
    defense: DefenseSpec
    seed: int

    @property
    def slug(self) -> str:
        """File-name-safe identifier."""
        return f"{self.attack.display}__{self.defense.name}__seed{self.seed}".replace("/", "_")


# Per-worker state, set once by the pool initializer (the model is sent once, not per task).
_STATE: dict[str, Any] = {}


def _init_worker(
    model: Model,
    pools: Pools,
    config: ExperimentConfig,
    logs: str,
    calibration_x: NDArray[np.float32] | None = None,
) -> None:
    # one thread per worker: the workers already use every core
    from movingtarget._threads import limit_threads

    limit_threads(1)
    _STATE.update(model=model, pools=pools, config=config, logs=logs, calibration_x=calibration_x)


def run_task(task: Task) -> dict[str, Any]:
    """Run one deployment in this process; write its event log; return its metrics."""
    model: Model = _STATE["model"]
    pools: Pools = _STATE["pools"]
    config: ExperimentConfig = _STATE["config"]
    defense = build_defense(task.defense.spec, model, name=task.defense.name, seed=task.seed)
    # approximate memories choose thresholds on training data, checked on the benign pool
    calibrations = calibrate_defense(
        defense, _STATE.get("calibration_x"), pools.benign_x, seed=task.seed
    )
    adversary = build_adversary(
        task.attack.name,
        pools.attacker_x,
        pools.attacker_y,
        defense.n_classes,
        seed=task.seed,
        **task.attack.params,
    )
    log = Arena(config.arena).run(
        defense, [adversary], pools.benign_x, pools.benign_y, seed=task.seed
    )
    if _STATE["logs"]:
        log.write(Path(_STATE["logs"]) / f"{task.slug}.csv")
    metrics = attack_metrics(log, 0)
    curve = cumulative_r_tilde(log, 0)
    at = curve_points(len(curve))
    return {
        "attack": task.attack.display,
        "defense": task.defense.name,
        "seed": task.seed,
        **metrics.as_dict(),
        "abstain_benign_false": benign_false_abstention(log),
        "calibration": [c.as_dict() for c in calibrations],
        "curve_x": at.tolist(),
        "curve_y": curve[at - 1].tolist(),
    }


def _prediction_rows(
    config: ExperimentConfig, model: Model, pools: Pools
) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for attack in config.attacks:
        target = attack.params.get("target", NO_TARGET)
        if attack.name == "test-set-targeted" and "target" not in attack.params:
            target = 0
        for d in config.defenses:
            defense = build_defense(d.spec, model, name=d.name)
            p = predict(
                attack.name,
                defense,
                pools.attacker_x,
                pools.attacker_y,
                config.arena.queries,
                NO_TARGET if target is None else int(target),
            )
            row: dict[str, Any] = {
                "r_tilde_predicted": p.value,
                "prediction": p.kind,
                "prediction_note": p.note,
                "_measured_key": p.measured_key,
            }
            # the prediction at every curve point: plotted beside the measured curve
            at = curve_points(config.arena.queries)
            curve = p.curve(at)
            if curve is not None:
                row["curve_predicted_x"] = at.tolist()
                row["curve_predicted_y"] = curve.tolist()
            out[(attack.display, d.name)] = row
    return out


def _mean_se(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if len(arr) == 0:
        return float("nan"), float("nan")
    se = float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else float("nan")
    return float(arr.mean()), se


def aggregate(
    runs: list[dict[str, Any]],
    predictions: dict[tuple[str, str], dict[str, Any]],
    r: float,
    config: ExperimentConfig,
) -> list[dict[str, Any]]:
    """One summary row per (attack, defense): means and standard errors over seeds."""
    rows = []
    for attack in config.attacks:
        for d in config.defenses:
            group = [x for x in runs if x["attack"] == attack.display and x["defense"] == d.name]
            if not group:
                continue
            pred = predictions[(attack.display, d.name)]
            row: dict[str, Any] = {
                "attack": attack.display,
                "defense": d.name,
                "dataset": config.dataset.display,
                "model": config.model.display,
                "seeds": len(group),
                "queries": config.arena.queries,
                "r": r,
            }
            for key in (
                "r_tilde",
                "r_tilde_late",
                "r_tilde_repeats",
                "abstain_adversarial",
                "abstain_benign",
                "benign_accuracy",
                "abstain_benign_false",
            ):
                mean, se = _mean_se([x.get(key, float("nan")) for x in group])
                row[key] = mean
                row[f"{key}_se"] = se
            row.update({k: v for k, v in pred.items() if not k.startswith("_")})
            row["r_tilde_comparable"] = row[pred["_measured_key"]]
            row["r_tilde_comparable_se"] = row[pred["_measured_key"] + "_se"]
            rows.append(row)
    return rows


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


@dataclass
class Results:
    """What an experiment produced (also written to ``out``).

    Examples
    --------
    >>> from movingtarget.experiment import load_config, run_experiment
    >>> cfg = load_config("synthetic", overrides=["seeds=1", "arena.queries=200"])
    >>> results = run_experiment(cfg, workers=1)
    >>> {"attack", "defense", "r_tilde", "r_tilde_predicted"} <= set(results.rows[0])
    True
    """

    config: ExperimentConfig
    r: float
    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    out: Path | None


def run_experiment(
    config: ExperimentConfig,
    out: str | Path | None = None,
    *,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    on_task_done: Callable[[int], None] | None = None,
) -> Results:
    """Run ``config``; write ``summary.json``, ``runs.json`` and event logs under ``out``.

    ``on_task_done`` gets the number of adversarial queries of each finished run.
    """
    dataset = load_dataset(config.dataset.name, **config.dataset.params)
    split = dataset.split(test_size=config.test_size, seed=config.split_seed)
    pools = make_pools(split.x_test, split.y_test, config.pools, config.split_seed)
    # before training: a benign stream larger than its pool fails in a second, not minutes
    config.arena.check_benign_pool(len(pools.benign_y))
    model = build_model(
        config.model.name,
        split,
        seed=config.model_seed,
        device=device,
        cache_dir=cache_dir,
        **config.model.params,
    )
    r = natural_error(model.predict_proba(split.x_test), split.y_test)
    calibration_x = split.x_train
    if len(calibration_x) > CALIBRATION_SIZE:
        pick = np.random.default_rng([config.split_seed, 0xCA1]).choice(
            len(calibration_x), CALIBRATION_SIZE, replace=False
        )
        calibration_x = calibration_x[np.sort(pick)]
    predictions = _prediction_rows(config, model, pools)
    # what each name stands for, mechanisms in the order they run (the report lists them)
    compositions = {
        d.name: build_defense(d.spec, model, name=d.name).describe() for d in config.defenses
    }
    tasks = [Task(a, d, s) for s in config.seeds for a in config.attacks for d in config.defenses]
    logs = ""
    if out is not None:
        out = Path(out)
        (out / "logs").mkdir(parents=True, exist_ok=True)
        logs = str(out / "logs")
    n_workers = workers or min(len(tasks), os.cpu_count() or 1)
    runs: list[dict[str, Any]] = []
    if n_workers <= 1:
        _init_worker(model, pools, config, logs, calibration_x)
        for task in tasks:
            runs.append(run_task(task))
            if on_task_done:
                on_task_done(config.arena.queries)
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(
            n_workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(model, pools, config, logs, calibration_x),
        ) as pool:
            for result in pool.map(run_task, tasks):
                runs.append(result)
                if on_task_done:
                    on_task_done(config.arena.queries)
    rows = aggregate(runs, predictions, r, config)
    results = Results(config, r, rows, runs, out)
    if out is not None:
        (out / "summary.json").write_text(json.dumps(_json_safe(rows), indent=2) + "\n")
        (out / "runs.json").write_text(json.dumps(_json_safe(runs)) + "\n")
        (out / "experiment.json").write_text(
            json.dumps(
                _json_safe(
                    {
                        "name": config.name,
                        "dataset": config.dataset.display,
                        "model": config.model.display,
                        "r": r,
                        "queries": config.arena.queries,
                        "seeds": list(config.seeds),
                        "defenses": [d.name for d in config.defenses],
                        "compositions": compositions,
                        "attacks": [a.display for a in config.attacks],
                        "arena": config.arena.__dict__,
                    }
                ),
                indent=2,
            )
            + "\n"
        )
    return results
