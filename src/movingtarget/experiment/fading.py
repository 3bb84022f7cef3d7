"""White fading to black box (Goodfellow 2019): an attacker with an exact copy of the whole
defense at time 0 screens it offline for mistakes, then attacks the live defense while
it keeps moving (continual refresh). How fast does what it learned go stale?

For every pool size ``K`` and refresh interval ``every`` (0: never refresh, the fixed
pool), and every seed, one deployment:

* the defense is ``refresh(every=E) > moving-target(abstain_on=disagreement)`` around a
  pool of ``K`` members trained with the seed (``every = 0``: the moving target alone);
* the attacker is the white-box ``screening`` attacker, given a deep copy of the defense
  made before the first query (pool, schedule secret and all): it screens the copy's
  pool offline for distinct mistakes and sends them, each once, to the live defense;
* the arena's oracle labels some of the queries the defense asks about (abstentions
  where members disagree), and each refresh trains its new member on the training
  split plus those labels, kept only while a benign canary set's accuracy holds.

The attacker's success (the share of its queries answered wrong, ABSTAIN not counting)
is measured per window of ``window`` adversarial queries; the report gives its mean per
window with standard errors over seeds.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.arena.arena import Arena, ArenaConfig
from movingtarget.arena.seeds import DeploymentSeeds
from movingtarget.attacks import build_adversary
from movingtarget.attacks.base import success
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense, supply_defense
from movingtarget.errors import ConfigError
from movingtarget.metrics.measured import attack_metrics
from movingtarget.models import build_model

__all__ = ["FadingConfig", "FadingResult", "decay_difference", "run_fading", "window_success"]


def _ints(value: object, where: str, least: int) -> tuple[int, ...]:
    items: list[Any] = list(value) if isinstance(value, list | tuple) else [value]
    if not items or any(
        isinstance(v, bool) or not isinstance(v, int | np.integer) or v < least for v in items
    ):
        shown = list(value) if isinstance(value, tuple) else value
        kind = "integers" if isinstance(value, list | tuple) else "an integer"
        raise ConfigError(f"fading: {where} must be {kind} >= {least}, got {shown!r}")
    if len(set(items)) != len(items):
        raise ConfigError(f"fading: {where} must not repeat a value, got {list(items)!r}")
    return tuple(int(v) for v in items)


def _number(value: object, where: str, lo: float, hi: float, open_lo: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (lo < value if open_lo else lo <= value) or not value <= hi:  # type: ignore[operator]
        bracket = "(" if open_lo else "["
        raise ConfigError(
            f"fading: {where} must be a number in {bracket}{lo:g}, {hi:g}], got {value!r}"
        )
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FadingConfig:
    """The fading experiment's settings; every field is checked when built.

    Parameters
    ----------
    members:
        Pool sizes ``K`` (integers >= 2).
    every:
        Refresh intervals in arrival times (integers >= 0; 0: never refresh).
    queries:
        Adversarial queries ``m`` per deployment.
    window:
        Adversarial queries per window of the table (divides ``queries``).
    seeds:
        Seeds 0 .. seeds-1: each trains its own pool and draws its own orders.
    dataset, member:
        The dataset and the pool's member model.
    test_size:
        Share of the dataset held out (the attacker's and benign pools, halves of it).
    benign_ratio:
        Benign queries per adversarial query.
    batch:
        Adversarial queries per round (the arena's ``adversary_batch``).
    oracle_budget, oracle_window, oracle_delay:
        The arena's labeler (see :class:`~movingtarget.arena.ArenaConfig`).
    agreement:
        The moving target's agreement share, in ``(0, 1]``.
    tolerance:
        Canary accuracy a refresh may lose, in ``[0, 1]``.
    budget:
        The screening attacker's offline model evaluations.

    Examples
    --------
    >>> FadingConfig(every=(0, 100)).every
    (0, 100)
    >>> FadingConfig(window=7)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    movingtarget.errors.ConfigError: fading: window (7) must divide queries (1200)...
    """

    members: tuple[int, ...] = (3, 5)
    every: tuple[int, ...] = (0, 300, 75)
    queries: int = 1200
    window: int = 200
    seeds: int = 5
    dataset: str = "digits"
    member: str = "logistic"
    test_size: float = 0.5
    benign_ratio: float = 0.25
    batch: int = 10
    oracle_budget: int = 20
    oracle_window: int = 100
    oracle_delay: int = 20
    agreement: float = 0.6
    tolerance: float = 0.01
    budget: int = 5000
    arena: ArenaConfig = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fix = object.__setattr__  # frozen: normalise the values once, here
        fix(self, "members", _ints(self.members, "members", 2))
        fix(self, "every", _ints(self.every, "every", 0))
        for name, least in (("queries", 1), ("window", 1), ("seeds", 1), ("batch", 1)):
            fix(self, name, _ints(getattr(self, name), name, least)[0])
        for name in ("oracle_budget", "oracle_window", "oracle_delay", "budget"):
            fix(self, name, _ints(getattr(self, name), name, 0)[0])
        if self.queries % self.window:
            raise ConfigError(
                f"fading: window ({self.window}) must divide queries ({self.queries}), so "
                "every window holds as many queries"
            )
        if self.queries // self.window < 2:
            raise ConfigError(
                f"fading: queries ({self.queries}) must hold at least two windows of "
                f"{self.window}, or there is no decay to see"
            )
        _number(self.test_size, "test_size", 0, 1, open_lo=True)
        _number(self.benign_ratio, "benign_ratio", 0, 100)
        _number(self.agreement, "agreement", 0, 1, open_lo=True)
        _number(self.tolerance, "tolerance", 0, 1)
        for name in ("dataset", "member"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"fading: {name} must be a name, got {getattr(self, name)!r}")
        fix(
            self,
            "arena",
            ArenaConfig(
                queries=self.queries,
                benign_ratio=self.benign_ratio,
                duplicate_share=0.0,
                adversary_batch=self.batch,
                oracle_budget=self.oracle_budget,
                oracle_window=self.oracle_window,
                oracle_delay=self.oracle_delay,
            ),
        )

    def spec(self, every: int) -> str:
        """The defense's composition for refresh interval ``every`` (0: no refresh)."""
        decision = f"moving-target(abstain_on=disagreement, agreement={self.agreement:g})"
        if every == 0:
            return decision
        return f"refresh(every={every}, tolerance={self.tolerance:g}) > {decision}"

    def as_dict(self) -> dict[str, Any]:
        """The settings, for ``fading.json``."""
        out = {k: v for k, v in asdict(self).items() if k != "arena"}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def window_success(
    answers: NDArray[np.int64],
    y_true: NDArray[np.int64],
    target: NDArray[np.int64],
    window: int,
) -> NDArray[np.float64]:
    """The share of an adversary's queries answered as it wanted, per consecutive window
    of ``window`` queries (a last, partial window is dropped).

    >>> window_success(np.array([1, 1, 0, -1]), np.zeros(4, np.int64), np.full(4, -1), 2)
    array([1., 0.])
    """
    wins = success(answers, y_true, target)
    n = len(wins) // window
    return wins[: n * window].reshape(n, window).mean(axis=1).astype(np.float64)


@dataclass
class FadingResult:
    """Per-seed measurements of one fading run; :meth:`rows` summarises them."""

    config: FadingConfig
    #: One dict per (pool size, refresh interval, seed): ``members``, ``every``, ``seed``,
    #: ``success`` (per window), ``refreshes``, ``rolled_back``, ``labels``, ``screened``,
    #: ``benign_accuracy``, ``abstain_benign``.
    runs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def rows(self) -> list[dict[str, Any]]:
        """One row per (pool size, refresh interval): per window the mean success over
        seeds and its standard error (:func:`window_se`), the decay (first window minus
        last) with its s.e., and what the refreshes did."""
        out = []
        q = self.config.window
        for k in self.config.members:
            for every in self.config.every:
                group = [r for r in self.runs if r["members"] == k and r["every"] == every]
                if not group:
                    continue
                s = np.array([r["success"] for r in group], np.float64)  # (seeds, windows)
                mean = s.mean(axis=0)
                se = np.array([window_se(s[:, w], q) for w in range(s.shape[1])])
                decay = s[:, 0] - s[:, -1]
                out.append(
                    {
                        "members": k,
                        "every": every,
                        "seeds": len(group),
                        "success": mean.tolist(),
                        "success_se": se.tolist(),
                        "decay": float(decay.mean()),
                        "decay_se": decay_se(s, q),
                        "refreshes": int(sum(r["refreshes"] for r in group)),
                        "rolled_back": int(sum(r["rolled_back"] for r in group)),
                        "labels": float(np.mean([r["labels"] for r in group])),
                        "benign_accuracy": float(np.mean([r["benign_accuracy"] for r in group])),
                        "abstain_benign": float(np.mean([r["abstain_benign"] for r in group])),
                    }
                )
        return out


def window_se(values: NDArray[np.float64], window: int) -> float:
    """The standard error of the mean of per-seed window success rates: the seeds'
    sample s.e., never below the binomial s.e. of the pooled rate over all their
    queries (seeds that agree exactly would otherwise claim s.e. 0).

    >>> round(window_se(np.array([0.5, 0.5]), 100), 4)
    0.0354
    """
    n = len(values)
    p = float(np.mean(values))
    binomial = math.sqrt(max(p * (1 - p), 0.0) / (n * window))
    sample = float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return max(sample, binomial)


def decay_se(success_by_seed: NDArray[np.float64], window: int) -> float:
    """The s.e. of the mean decay (first window minus last) over seeds: the sample s.e.
    of the per-seed decays, never below the binomial s.e. of the two windows' rates.

    >>> round(decay_se(np.array([[0.5, 0.5], [0.5, 0.5]]), 100), 4)
    0.05
    """
    s = np.asarray(success_by_seed, np.float64)
    n = len(s)
    d = s[:, 0] - s[:, -1]
    sample = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    first, last = float(s[:, 0].mean()), float(s[:, -1].mean())
    binomial = math.sqrt((first * (1 - first) + last * (1 - last)) / (n * window))
    return max(sample, binomial)


def decay_difference(
    result: FadingResult, members: int, faster: int, slower: int
) -> tuple[float, float]:
    """How much more the attacker's success decays at refresh interval ``faster`` than
    at ``slower`` (pool size ``members``), with its standard error: the mean over seeds
    of the paired per-seed difference of decays (the same seed trains the same pool
    for both), its sample s.e. floored at the binomial s.e. of the four windows' rates.
    """
    q = result.config.window

    def by_seed(every: int) -> dict[int, list[float]]:
        return {
            r["seed"]: r["success"]
            for r in result.runs
            if r["members"] == members and r["every"] == every
        }

    fast, slow = by_seed(faster), by_seed(slower)
    seeds = sorted(set(fast) & set(slow))
    if not seeds:
        raise ConfigError(f"fading: no runs for members {members}, every {faster} and {slower}")
    f = np.array([fast[s] for s in seeds], np.float64)
    w = np.array([slow[s] for s in seeds], np.float64)
    diff = (f[:, 0] - f[:, -1]) - (w[:, 0] - w[:, -1])
    n = len(seeds)
    sample = float(np.std(diff, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    rates = [float(a.mean()) for a in (f[:, 0], f[:, -1], w[:, 0], w[:, -1])]
    binomial = math.sqrt(sum(p * (1 - p) for p in rates) / (n * q))
    return float(diff.mean()), max(sample, binomial)


def run_fading(
    config: FadingConfig,
    *,
    cache_dir: str | None = None,
    on_run_done: Callable[[int], None] | None = None,
) -> FadingResult:
    """Every deployment of ``config``, in this process; ``on_run_done`` gets the
    adversarial queries of each finished one."""
    import time

    start = time.perf_counter()
    dataset = load_dataset(config.dataset)
    split = dataset.split(test_size=config.test_size, seed=0)
    from movingtarget.experiment.runner import make_pools  # the runner imports much more

    pools = make_pools(split.x_test, split.y_test, "split", 0)
    config.arena.check_benign_pool(len(pools.benign_y))
    result = FadingResult(config)
    for k in config.members:
        for seed in range(config.seeds):
            seeds = DeploymentSeeds.from_seed(seed)
            for every in config.every:
                pool = build_model(
                    "pool", split, seed=seed, members=k, member=config.member, cache_dir=cache_dir
                )
                result.runs.append(_deployment(config, split, pools, pool, k, every, seed, seeds))
                if on_run_done is not None:
                    on_run_done(config.queries)
    result.seconds = time.perf_counter() - start
    return result


def _deployment(
    config: FadingConfig,
    split: Any,
    pools: Any,
    pool: Any,
    k: int,
    every: int,
    seed: int,
    seeds: DeploymentSeeds,
) -> dict[str, Any]:
    defense = build_defense(config.spec(every), pool, seed=seeds.defense)
    supply_defense(defense, split, pools.benign_x, pools.benign_y)
    # the whole defense, copied before its first query: what the attacker holds
    snapshot = copy.deepcopy(defense)
    adversary = build_adversary(
        "screening",
        pools.attacker_x,
        pools.attacker_y,
        defense.n_classes,
        seed=seeds.adversary,
        model=snapshot.model,
        budget=config.budget,
        perturb=[],
    )
    log = Arena(config.arena).run(
        defense, [adversary], pools.benign_x, pools.benign_y, seed=seeds.arena
    )
    mine = log.adversary == 0
    wins = window_success(log.answer[mine], log.y_true[mine], log.target[mine], config.window)
    records = [r for m in defense.mechanisms for r in getattr(m, "records", [])]
    metrics = attack_metrics(log, 0)
    defense.reset()
    return {
        "members": k,
        "every": every,
        "seed": seed,
        "success": wins.tolist(),
        "refreshes": len(records),
        "rolled_back": sum(not r.accepted for r in records),
        "labels": defense.labels_learned,
        "screened": dict(getattr(adversary, "screened", {})),
        "benign_accuracy": metrics.benign_accuracy,
        "abstain_benign": metrics.abstain_benign,
    }
