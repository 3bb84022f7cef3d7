"""Run an experiment: every attack against every defense, for every seed, in parallel."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget._optional import require
from movingtarget.arena.arena import Arena
from movingtarget.arena.eventlog import EventLog
from movingtarget.arena.seeds import DeploymentSeeds
from movingtarget.attacks import NO_TARGET, build_adversary
from movingtarget.datasets import load_dataset
from movingtarget.datasets.base import Split
from movingtarget.defenses import (
    GatedUpdate,
    build_defense,
    normalized_composition,
    supply_defense,
)
from movingtarget.defenses.near_repeat import calibrate_defense, split_unseen
from movingtarget.errors import ConfigError, MovingTargetError, TaskFailed
from movingtarget.experiment.cluster import ClusterSpec, parse_cluster
from movingtarget.experiment.config import ComponentSpec, DefenseSpec, ExperimentConfig
from movingtarget.metrics.analytic import (
    FEW_MISTAKES,
    RELATION,
    Z_MAX,
    Prediction,
    predict,
    verdict,
)
from movingtarget.metrics.fooled import benign_near_false_abstention, fooled_metrics
from movingtarget.metrics.measured import (
    attack_metrics,
    benign_false_abstention,
    cumulative_r_tilde,
    natural_error,
    repeat_mask,
)
from movingtarget.metrics.trajectory import trajectory_metrics
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


def distinct_rows(x: NDArray[np.generic]) -> NDArray[np.int64]:
    """Indices of the first occurrence of each byte-identical row of ``x``, in order.

    >>> distinct_rows(np.array([[1, 2], [3, 4], [1, 2]], np.float32)).tolist()
    [0, 1]
    """
    flat = np.ascontiguousarray(np.asarray(x).reshape(len(x), -1))
    if len(flat) == 0:
        return np.zeros(0, np.int64)
    rows = flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()
    _, first = np.unique(rows, return_index=True)
    return np.sort(first).astype(np.int64)


@dataclass(frozen=True)
class Pools:
    """The attacker's labeled pool and the benign users' pool (from the test split).

    ``duplicates`` counts test rows dropped before splitting because they were
    byte-identical to an earlier row: with them, a benign user could send exactly what
    the attacker sent, and a memory would rightly call it a repeat.
    """

    attacker_x: NDArray[np.float32]
    attacker_y: NDArray[np.int64]
    benign_x: NDArray[np.float32]
    benign_y: NDArray[np.int64]
    duplicates: int = 0


def make_pools(x: NDArray[np.float32], y: NDArray[np.int64], how: str, seed: int) -> Pools:
    """Disjoint, stratified halves of the distinct rows of the test split (``split``), or
    both the whole of it (``shared``).

    >>> x = np.array([[0.0], [1.0], [0.0], [2.0], [3.0]], np.float32)
    >>> pools = make_pools(x, np.array([0, 0, 0, 1, 1]), "split", seed=0)
    >>> len(pools.attacker_y) + len(pools.benign_y), pools.duplicates
    (4, 1)
    """
    keep = distinct_rows(x)
    dropped = len(x) - len(keep)
    x, y = x[keep], y[keep]
    if how == "shared":
        return Pools(x, y, x, y, dropped)
    rng = np.random.default_rng([seed, 0x9001])
    attacker = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        attacker[idx[: (len(idx) + 1) // 2]] = True
    return Pools(x[attacker], y[attacker], x[~attacker], y[~attacker], dropped)


@dataclass(frozen=True)
class Task:
    """One deployment: an attack, a defense, a seed (and the split it runs on)."""

    attack: ComponentSpec
    defense: DefenseSpec
    seed: int
    split_seed: int = 0

    @property
    def slug(self) -> str:
        """File-name-safe identifier."""
        return f"{self.attack.display}__{self.defense.name}__seed{self.seed}".replace("/", "_")


@dataclass
class Prepared:
    """A split's trained model, its pools and its natural error rates."""

    model: Model
    pools: Pools
    calibration_x: NDArray[np.float32] | None
    rates: dict[str, float]
    #: For mechanisms calibrated on unseen inputs: a half of the benign pool to
    #: calibrate on and the other half to report the alarm rate on.
    unseen: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
    #: The split, for mechanisms that train new models (``refresh``): kept only when a
    #: defense of the config has one (the workers each get a copy).
    split: Split | None = None


def refreshes(config: ExperimentConfig) -> bool:
    """Whether any defense of ``config`` trains new models while deployed (``refresh``).

    >>> from movingtarget.experiment.config import load_config
    >>> refreshes(load_config("thesis"))
    False
    """
    return any(
        name == "refresh" for d in config.defenses for name, _ in normalized_composition(d.spec)
    )


def prepare(
    config: ExperimentConfig,
    split_seed: int,
    *,
    device: str = "auto",
    cache_dir: str | Path | None = None,
) -> Prepared:
    """Split the dataset, make the pools, train the model, measure each ``r``."""
    dataset = load_dataset(config.dataset.name, **config.dataset.params)
    split = dataset.split(test_size=config.test_size, seed=split_seed)
    pools = make_pools(split.x_test, split.y_test, config.pools, split_seed)
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
    rates = {
        "r_test": natural_error(model.predict_proba(split.x_test), split.y_test),
        "r_attacker": natural_error(model.predict_proba(pools.attacker_x), pools.attacker_y),
        "r_benign": (
            natural_error(model.predict_proba(pools.benign_x), pools.benign_y)
            if len(pools.benign_y)
            else float("nan")
        ),
    }
    calibration_x = split.x_train
    if len(calibration_x) > CALIBRATION_SIZE:
        pick = np.random.default_rng([split_seed, 0xCA1]).choice(
            len(calibration_x), CALIBRATION_SIZE, replace=False
        )
        calibration_x = calibration_x[np.sort(pick)]
    unseen = None
    if len(pools.benign_y) >= 4:
        unseen = split_unseen(pools.benign_x, [split_seed, 0x5EE], CALIBRATION_SIZE)
    keep = split if refreshes(config) else None
    return Prepared(model, pools, calibration_x, rates, unseen, keep)


# Per-worker state, set once by the pool initializer (models are sent once, not per task).
_STATE: dict[str, Any] = {}


def _init_worker(prepared: dict[int, Prepared], config: ExperimentConfig, logs: str) -> None:
    # one thread per worker: the workers already use every core
    from movingtarget._threads import limit_threads

    limit_threads(1)
    _STATE.clear()
    _STATE.update(prepared=prepared, config=config, logs=logs, proba={})


def _pool_proba(task: Task, adversary: Any, model: Model) -> NDArray[np.float64] | None:
    """The model's probabilities on the adversary's pool, once per (split, pool)."""
    pool = getattr(adversary, "pool_x", None)
    if pool is None:
        return None
    key = (task.split_seed, int(getattr(adversary, "target", NO_TARGET)), len(pool))
    cache: dict[tuple[int, int, int], NDArray[np.float64]] = _STATE["proba"]
    if key not in cache:
        cache[key] = np.asarray(model.predict_proba(pool), dtype=np.float64)
    return cache[key]


def ran_out_at(source: NDArray[np.int64], supply: int) -> int | None:
    """The query (1-based) that sent the last of ``supply`` fresh inputs, after which the
    attacker could only repeat; None when some input was never sent.

    >>> ran_out_at(np.array([2, 0, 0, 1, 1]), 3), ran_out_at(np.array([0, 0]), 2)
    (4, None)
    """
    fresh = ~repeat_mask(source)
    if supply <= 0 or int(fresh.sum()) < supply:
        return None
    return int(np.flatnonzero(fresh)[-1]) + 1


def calibrate_task(defense: Any, prepared: Prepared, seed: int) -> list[Any]:
    """Calibrate ``defense`` for one deployment: approximate memories choose thresholds
    on training inputs, checked on the benign pool; detectors calibrated on unseen
    inputs (``calibrate_on = "unseen"``) on one half of the benign pool, checked on the
    other half."""
    return calibrate_defense(
        defense,
        prepared.calibration_x,
        prepared.pools.benign_x,
        seed=seed,
        unseen=prepared.unseen,
    )


def gated_update(table: dict[str, Any], pools: Pools, seed: int) -> GatedUpdate:
    """The gate of a defense's ``update`` table: its canary is ``canary`` seeded items of
    the benign pool (held out from training; the oracle labels queries, not these)."""
    n = min(int(table.get("canary", 200)), len(pools.benign_y))
    pick = np.sort(np.random.default_rng([seed, 0xCA7]).choice(len(pools.benign_y), n, False))
    args = {k: v for k, v in table.items() if k != "canary"}
    return GatedUpdate(pools.benign_x[pick], pools.benign_y[pick], **args)


def run_task(task: Task) -> dict[str, Any]:
    """Run one deployment in this process; write its event log; return its metrics and
    the prediction for the attacker it ran."""
    out, log = deploy(task)
    if _STATE["logs"]:
        log.write(Path(_STATE["logs"]) / f"{task.slug}.csv")
    return out


def deploy(task: Task) -> tuple[dict[str, Any], EventLog]:
    """Run one deployment in this process (set up by :func:`_init_worker`); return its
    metrics, the prediction for the attacker it ran, and its event log."""
    prepared: Prepared = _STATE["prepared"][task.split_seed]
    model, pools = prepared.model, prepared.pools
    config: ExperimentConfig = _STATE["config"]
    seeds = DeploymentSeeds.from_seed(task.seed)
    update = None
    if task.defense.update is not None:
        # the model learns in place: this deployment gets its own copy
        model = copy.deepcopy(model)
        update = gated_update(task.defense.update, pools, seeds.calibration)
    defense = build_defense(
        task.defense.spec, model, name=task.defense.name, seed=seeds.defense, update=update
    )
    calibrations = calibrate_task(defense, prepared, seeds.calibration)
    if prepared.split is not None:
        # a refresh trains new members on the training split, gated on the benign pool
        # (held out from training, labeled: the defender's canary set)
        supply_defense(defense, prepared.split, pools.benign_x, pools.benign_y)
    adversary = build_adversary(
        task.attack.name,
        pools.attacker_x,
        pools.attacker_y,
        defense.n_classes,
        seed=seeds.adversary,
        model=model,  # only white-box attacks (needs_model) get it
        **task.attack.params,
    )
    m = config.arena.queries
    prediction = predict(
        defense,
        adversary,
        m,
        lifetime=config.arena.lifetime,
        batch=config.arena.adversary_batch,
        proba=_pool_proba(task, adversary, model),
    )
    log = Arena(config.arena).run(
        defense, [adversary], pools.benign_x, pools.benign_y, seed=seeds.arena, inputs=True
    )
    # the model is shared by this worker's tasks: put back what a refresh or a gated
    # update changed, so the next task's defense gets it as deployed
    defense.reset()
    metrics = attack_metrics(log, 0)
    curve = cumulative_r_tilde(log, 0)
    at = curve_points(len(curve))
    source = log.source[log.adversary == 0]
    out: dict[str, Any] = {
        "attack": task.attack.display,
        "defense": task.defense.name,
        "seed": task.seed,
        "split_seed": task.split_seed,
        **metrics.as_dict(),
        # how the attacker's queries walk (exact duplicates, successive steps), and when a
        # memory first refused one as a (near) repeat
        **trajectory_metrics(log, 0),
        "repeats": int(repeat_mask(source).sum()),
        "ran_out_at": ran_out_at(source, prediction.supply),
        "prediction": prediction.as_dict(),
        "abstain_benign_false": benign_false_abstention(log),
        "abstain_benign_near": benign_near_false_abstention(log),
        # per source input: the OARS / QPA success rate and the perturbation it took
        **fooled_metrics(log, pools.attacker_x),
        "calibration": [c.as_dict() for c in calibrations],
        # gated model updates: how many, how many rolled back (canary accuracy fell)
        "updates": len(defense.repairs),
        "updates_rolled_back": sum(not r.accepted for r in defense.repairs),
        "curve_x": at.tolist(),
        "curve_y": curve[at - 1].tolist(),
    }
    predicted_curve = prediction.curve(at)
    if predicted_curve is not None:
        out["curve_predicted_y"] = predicted_curve.tolist()
    return out, log


def sample_se_floor(sample_se: float, rate: float, queries: int) -> float:
    """The s.e. a verdict uses without an analytic one: the seeds' sample s.e., but never
    below the binomial s.e. of ``rate`` over all ``queries`` of the seeds (a few seeds
    that happen to agree exactly have sample s.e. 0, which would turn any difference
    from a bound, however small, into ``z = inf``).

    >>> round(sample_se_floor(0.0, 0.06, 1200), 4), sample_se_floor(0.02, 0.06, 1200)
    (0.0069, 0.02)
    >>> sample_se_floor(float("nan"), 0.06, 400)
    nan
    """
    if not (np.isfinite(sample_se) and np.isfinite(rate)) or queries <= 0:
        return sample_se  # one seed: no sample s.e., no verdict
    return max(sample_se, float(np.sqrt(rate * (1 - rate) / queries)))


def _mean_se(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if len(arr) == 0:
        return float("nan"), float("nan")
    se = float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else float("nan")
    return float(arr.mean()), se


def bootstrap_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean over seeds (seeded: reproducible);
    NaN with fewer than 3 values.

    >>> lo, hi = bootstrap_ci([0.1, 0.2, 0.3, 0.4, 0.5]); lo < 0.3 < hi
    True
    >>> bootstrap_ci([0.2, 0.2, 0.2])
    (0.2, 0.2)
    """
    arr = np.asarray([v for v in values if v is not None and not np.isnan(v)], np.float64)
    if len(arr) < 3:
        return float("nan"), float("nan")
    if np.ptp(arr) == 0:
        return float(arr[0]), float(arr[0])
    from scipy.stats import bootstrap

    res = bootstrap(
        (arr,),
        np.mean,
        confidence_level=level,
        n_resamples=2000,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _prediction_summary(group: list[dict[str, Any]], m: int) -> dict[str, Any]:
    """The row's prediction from its runs' predictions: the mean over seeds, with the
    analytic standard error of the comparable measurement's mean where it is known."""
    preds = [g["prediction"] for g in group]
    kinds = {p["kind"] for p in preds}
    first = preds[0]
    row: dict[str, Any] = {
        "prediction": first["kind"] if len(kinds) == 1 else "",
        "prediction_note": first["note"] if len(kinds) == 1 else "the seeds' premises differ",
        "rate_label": first["rate_label"],
    }

    def mean(key: str) -> float:
        vals = [p[key] for p in preds if p[key] is not None]
        return float(np.mean(vals)) if vals else float("nan")

    row["r_tilde_predicted"] = mean("value") if row["prediction"] else float("nan")
    row["r_tilde_iid"] = mean("iid") if row["prediction"] else float("nan")
    row["rate"] = mean("rate")
    row["supply"] = round(mean("supply")) if preds else 0
    row["mistakes"] = mean("mistakes")
    row["pool_mistakes"] = mean("pool_mistakes")
    row["bound_k_over_m"] = row["mistakes"] / m
    variances = []
    for g, p in zip(group, preds, strict=True):
        v = p["variance"]
        if p["kind"] == "repeats" and v is not None:
            v = v / g["repeats"] if g["repeats"] else float("nan")
        variances.append(float("nan") if v is None else float(v))
    n = len(group)
    row["r_tilde_predicted_se"] = float(np.sqrt(np.sum(variances)) / n)
    ran = [g["ran_out_at"] for g in group if g.get("ran_out_at") is not None]
    row["ran_out"] = len(ran)
    row["ran_out_at"] = float(np.median(ran)) if ran else None
    return row


def aggregate(
    runs: list[dict[str, Any]],
    r: float,
    config: ExperimentConfig,
) -> list[dict[str, Any]]:
    """One summary row per (attack, defense): means and standard errors over seeds, the
    prediction for the attacker that ran, and whether the two agree."""
    rows = []
    m = config.arena.queries
    for attack in config.attacks:
        for d in config.defenses:
            group = [x for x in runs if x["attack"] == attack.display and x["defense"] == d.name]
            if not group:
                continue
            row: dict[str, Any] = {
                "attack": attack.display,
                "defense": d.name,
                "dataset": config.dataset.display,
                "model": config.model.display,
                "seeds": len(group),
                "resample": config.resample,
                "queries": m,
                "r": r,
            }
            for key in (
                "r_tilde",
                "r_tilde_late",
                "r_tilde_repeats",
                "abstain_adversarial",
                "abstain_benign",
                "benign_accuracy",
                "benign_accuracy_answered",
                "abstain_benign_false",
                "abstain_benign_near",
                "queries_to_first_mistake",
                "bad_queries",
                "bad_queries_per_success",
                "accounts_used",
                "accounts_burnt",
            ):
                mean, se = _mean_se([x.get(key, float("nan")) for x in group])
                row[key] = mean
                row[f"{key}_se"] = se
            # natural sampling's expectation: a geometric wait of mean 1/r
            row["queries_to_first_mistake_natural"] = 1 / r if r > 0 else float("inf")
            row.update(_prediction_summary(group, m))
            key = Prediction(0.0, row["prediction"]).measured_key
            row["r_tilde_comparable"] = row[key]
            row["r_tilde_comparable_se"] = row[key + "_se"]
            low, high = bootstrap_ci([x.get(key, float("nan")) for x in group])
            row["r_tilde_comparable_ci"] = [low, high]
            analytic = row["r_tilde_predicted_se"]
            use_analytic = bool(np.isfinite(analytic))
            row["se_used"] = "analytic" if use_analytic else "sample"
            se = (
                analytic
                if use_analytic
                else sample_se_floor(row["r_tilde_comparable_se"], row[key], m * len(group))
            )
            row["verdict"], row["z"] = verdict(
                row["r_tilde_comparable"],
                row["r_tilde_predicted"],
                RELATION.get(row["prediction"], ""),
                se,
                z_max=Z_MAX,
            )
            row["warning"] = ""
            if row["prediction"] and row["pool_mistakes"] < FEW_MISTAKES:
                row["warning"] = (
                    f"the attacker's pool holds {row['pool_mistakes']:.3g} inputs answered as "
                    f"it wants (fewer than {FEW_MISTAKES}): r~ says little here"
                )
            curves = [x["curve_predicted_y"] for x in group if "curve_predicted_y" in x]
            if curves and len(curves) == len(group) and len({len(c) for c in curves}) == 1:
                row["curve_predicted_x"] = group[0]["curve_x"]
                row["curve_predicted_y"] = np.mean(np.asarray(curves), axis=0).tolist()
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


#: The results folder's subfolder of per-deployment records (``--resume`` reads them).
TASKS_DIR = "tasks"


def sweep_key(config: ExperimentConfig) -> str:
    """What a deployment's record depends on besides its own attack, defense and seed:
    the config without its seed list (so a resumed sweep may add seeds).

    >>> from movingtarget.experiment.config import load_config
    >>> a = load_config("synthetic", ["seeds=2"]); b = load_config("synthetic", ["seeds=5"])
    >>> sweep_key(a) == sweep_key(b), sweep_key(a) == sweep_key(load_config("hello-world"))
    (True, False)
    """
    text = repr(dataclasses.replace(config, seeds=()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class TaskRecords:
    """The finished deployments of a sweep on disk: ``tasks/SLUG.json`` per deployment,
    written when it finishes (after its event log, by rename, so a record on disk is
    whole and its log is there), and ``tasks/sweep.json`` naming the config they belong
    to. Without ``out`` nothing is written and nothing is resumed."""

    def __init__(self, out: Path | None, config: ExperimentConfig, *, resume: bool) -> None:
        self.folder = out / TASKS_DIR if out is not None else None
        self.resume = resume
        key = sweep_key(config)
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = self.folder / "sweep.json"
        if resume and stamp.exists():
            try:
                was = json.loads(stamp.read_text(encoding="utf-8")).get("config")
            except (ValueError, AttributeError):
                was = None
            if was != key:
                raise ConfigError(
                    f"--resume: {self.folder} holds deployments of another config (or "
                    "another queries, defense, attack or arena setting); run without "
                    "--resume to start over"
                )
        if not resume:
            # a fresh sweep: records of an earlier one must not be resumed later
            for old in self.folder.glob("*.json"):
                old.unlink()
        stamp.write_text(json.dumps({"config": key}) + "\n", encoding="utf-8")

    def finished(self, tasks: list[Task]) -> dict[int, dict[str, Any]]:
        """Index -> result of each task recorded on disk (only when resuming)."""
        if self.folder is None or not self.resume:
            return {}
        found = {}
        for i, task in enumerate(tasks):
            path = self.folder / f"{task.slug}.json"
            try:
                found[i] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # not finished (or unreadable): it runs again
        return found

    def save(self, task: Task, result: dict[str, Any]) -> dict[str, Any]:
        """Record ``result``; return it as a resumed run would read it back.

        Every result passes through the same JSON text (NaN kept as NaN), so a sweep
        that was resumed and one that was not aggregate byte-identical summaries."""
        text = json.dumps(result)
        if self.folder is not None:
            path = self.folder / f"{task.slug}.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        loaded: dict[str, Any] = json.loads(text)
        return loaded


def task_name(task: Task) -> str:
    """A deployment as a user names it.

    >>> from movingtarget.experiment.config import ComponentSpec, DefenseSpec
    >>> task_name(Task(ComponentSpec("test-set"), DefenseSpec("deterministic", "deterministic"), 3))
    'test-set x deterministic, seed 3'
    """
    return f"{task.attack.display} x {task.defense.name}, seed {task.seed}"


#: Failed deployments a failure message names besides the first (the line stays a line).
NAMED_FAILURES = 5


def failure_message(failed: list[tuple[Task, BaseException]], total: int, kept: Path | None) -> str:
    """One line: how many deployments failed, which, the first one's error, where the
    finished ones are kept."""
    task, exc = failed[0]
    why = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, MovingTargetError):
        why = f"{type(exc).__name__}: {why}"
    names = "; ".join(task_name(t) for t, _ in failed[1 : 1 + NAMED_FAILURES])
    more = len(failed) - 1 - NAMED_FAILURES
    names += f"; and {more} more" if more > 0 else ""
    others = f" (also failed: {names})" if names else ""
    where = (
        f"; the {total - len(failed)} finished are kept in {kept} (run again with --resume "
        "to run only the rest)"
        if kept is not None
        else ""
    )
    return f"{len(failed)} of {total} deployments failed: {task_name(task)}: {why}{others}{where}"


def _run_on_cluster(
    spec: ClusterSpec,
    tasks: list[Task],
    todo: list[int],
    prepared: dict[int, Prepared],
    config: ExperimentConfig,
    logs: str,
    finished: Callable[[int, dict[str, Any]], None],
    failed: list[tuple[Task, BaseException]],
) -> None:
    """Run the ``todo`` tasks on the Dask cluster ``spec``; write each event log here."""
    import distributed

    from movingtarget.experiment.cluster import Shared, open_client, run_remote

    if not todo:
        return
    with open_client(spec) as client:
        # one copy per worker, not one per task (hash=False: no need to tokenize models)
        shared = client.scatter(Shared(prepared, config), broadcast=True, hash=False)
        run = uuid.uuid4().hex[:8]  # keys unique on a long-lived scheduler
        futures = {
            client.submit(run_remote, tasks[i], shared, key=f"{tasks[i].slug}-{run}", pure=False): i
            for i in todo
        }
        for future in distributed.as_completed(futures):
            i = futures[future]
            try:
                result, log = future.result()
            except MovingTargetError:
                client.cancel(list(futures))  # a user error: every deployment would fail
                raise
            except Exception as exc:  # reported by name; the others still finish
                failed.append((tasks[i], exc))
                continue
            if logs:
                (Path(logs) / f"{tasks[i].slug}.csv").write_text(log, encoding="utf-8")
            finished(i, result)


def run_experiment(
    config: ExperimentConfig,
    out: str | Path | None = None,
    *,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    on_task_done: Callable[[int], None] | None = None,
    cluster: str | None = None,
    resume: bool = False,
    on_resumed: Callable[[int, int], None] | None = None,
) -> Results:
    """Run ``config``; write ``summary.json``, ``runs.json`` and event logs under ``out``.

    ``on_task_done`` gets the number of adversarial queries of each finished run (and of
    each run found on disk). ``cluster`` (``local:N`` or ``tcp://HOST:PORT``) runs the
    deployments on a Dask cluster instead of the process pool. Each finished deployment
    is recorded under ``out/tasks`` as it finishes; ``resume`` keeps the ones recorded
    there by an interrupted run of the same config and runs only the rest
    (``on_resumed`` gets how many were found, of how many). A deployment that raises is
    reported by name in one :class:`~movingtarget.errors.TaskFailed` once the others
    have finished; their records stay for ``resume``. A user error
    (:class:`~movingtarget.errors.MovingTargetError`: a bad setting, a missing extra)
    would fail every deployment alike: the first one stops the run, as it is.
    """
    spec = None
    if cluster is not None:
        # a bad --cluster or a missing extra fails before any model is trained
        spec = parse_cluster(cluster)
        require("distributed", "--cluster")
    split_seeds = (
        [config.split_seed + s for s in config.seeds]
        if config.resample == "data"
        else [config.split_seed]
    )
    prepared = {ss: prepare(config, ss, device=device, cache_dir=cache_dir) for ss in split_seeds}
    base = prepared[split_seeds[0]]
    r = base.rates["r_test"]
    # what each name stands for, mechanisms in the order they run (the report lists them)
    compositions = {
        d.name: build_defense(d.spec, base.model, name=d.name).describe() for d in config.defenses
    }

    def split_of(seed: int) -> int:
        return config.split_seed + seed if config.resample == "data" else config.split_seed

    tasks = [
        Task(a, d, s, split_of(s))
        for s in config.seeds
        for a in config.attacks
        for d in config.defenses
    ]
    logs = ""
    if out is not None:
        out = Path(out)
        (out / "logs").mkdir(parents=True, exist_ok=True)
        logs = str(out / "logs")
    records = TaskRecords(out, config, resume=resume)
    done = records.finished(tasks)
    if resume and on_resumed:
        on_resumed(len(done), len(tasks))
    for _ in done:
        if on_task_done:
            on_task_done(config.arena.queries)
    todo = [i for i in range(len(tasks)) if i not in done]
    failed: list[tuple[Task, BaseException]] = []

    def finished(i: int, result: dict[str, Any]) -> None:
        done[i] = records.save(tasks[i], result)
        if on_task_done:
            on_task_done(config.arena.queries)

    n_workers = workers or min(len(todo), os.cpu_count() or 1)
    if spec is not None:
        _run_on_cluster(spec, tasks, todo, prepared, config, logs, finished, failed)
    elif n_workers <= 1:
        _init_worker(prepared, config, logs)
        for i in todo:
            try:
                result = run_task(tasks[i])
            except MovingTargetError:
                raise  # a user error (config, missing extra): every deployment would fail
            except Exception as exc:  # reported by name below; the others still run
                failed.append((tasks[i], exc))
                continue
            finished(i, result)
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(
            n_workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(prepared, config, logs),
        ) as pool:
            futures = {pool.submit(run_task, tasks[i]): i for i in todo}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except MovingTargetError:
                    for pending in futures:  # the pool's exit would wait for them
                        pending.cancel()
                    raise
                except Exception as exc:
                    failed.append((tasks[futures[future]], exc))
                    continue
                finished(futures[future], result)
    if failed:
        raise TaskFailed(failure_message(failed, len(tasks), records.folder))
    # in the order of the task list, however they finished: the summary is the same
    runs = [done[i] for i in range(len(tasks))]
    rows = aggregate(runs, r, config)
    rates = {key: float(np.mean([p.rates[key] for p in prepared.values()])) for key in base.rates}
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
                        **rates,
                        "pool_sizes": {
                            "attacker": len(base.pools.attacker_y),
                            "benign": len(base.pools.benign_y),
                            "duplicates_dropped": base.pools.duplicates,
                        },
                        "resample": config.resample,
                        "split_seeds": split_seeds,
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


def record_then(out: str | Path, names: list[str]) -> None:
    """Record in ``out/experiment.json`` the subfolders of the experiments run after it
    (the config's ``then``), so its report shows their tables."""
    path = Path(out) / "experiment.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["then"] = list(names)
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_results(out: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The summary rows and the per-run results of a results folder."""
    root = Path(out)
    rows = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    runs = json.loads((root / "runs.json").read_text(encoding="utf-8"))
    return rows, runs
