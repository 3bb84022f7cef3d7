"""``movingtarget resilience``: how much perturbation the model and each defense need.

For the config's dataset and model, over ``inputs`` held-out inputs (a seeded sample of
the test split), the minimal perturbation that changes each correctly classified
input's class, in L2 and L∞ (:func:`~movingtarget.attacks.perturb.minimal.minimal_perturbation`;
methods ``auto``: DeepFool for L2 and the FGSM ray for L∞ where the model has
gradients, HopSkipJump otherwise). Then, for each defense of the config:

* **answered**: the model's figures over the inputs the defense answers (clean);
* **defended** (models with gradients): the smallest step along the same FGSM ray that
  gets a *wrong answer* from the defense. An ABSTAIN is not a success, so abstention
  raises this figure; the defense is reset before each batch and every query comes from
  each perturbed input is answered by a fresh deployment, so a memory never sees a
  repeat (the figure measures the decision boundary with abstention, not the memory).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN
from movingtarget.experiment.config import AUTO, ExperimentConfig, ResilienceConfig
from movingtarget.metrics.resilience import per_class, summarize


@dataclass
class ResilienceResult:
    """Everything ``movingtarget resilience`` measured (see :meth:`to_json`)."""

    name: str
    model: str
    dataset: str
    inputs: int
    correct: int
    methods: dict[str, str]
    eps: dict[str, float]
    values: dict[str, NDArray[np.float64]]
    y: NDArray[np.int64]
    groups: list[dict[str, Any]] = field(default_factory=list)
    per_class: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    sweep: list[dict[str, Any]] = field(default_factory=list)
    jsma: dict[str, Any] = field(default_factory=dict)
    detection: dict[str, Any] = field(default_factory=dict)
    comparison: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    #: How the attacks reached the model: its gradients, or a black box of its scores.
    estimator: str = ""

    def to_json(self) -> dict[str, Any]:
        """Summaries (not the per-input arrays) as plain JSON values."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not np.isfinite(v):
                return None if np.isnan(v) else "inf"
            if isinstance(v, dict):
                return {str(k): clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return clean(
            {
                "name": self.name,
                "model": self.model,
                "dataset": self.dataset,
                "inputs": self.inputs,
                "correct": self.correct,
                "methods": self.methods,
                "estimator": self.estimator,
                "eps": self.eps,
                "groups": self.groups,
                "per_class": self.per_class,
                "sweep": self.sweep,
                "jsma": self.jsma,
                "detection": self.detection,
                "comparison": self.comparison,
                "seconds": self.seconds,
            }
        )


def _method(chosen: str, norm: str, has_gradients: bool) -> str:
    if chosen != AUTO:
        return chosen
    if not has_gradients:
        return "hopskipjump"
    return "deepfool" if norm == "2" else "fgsm"


def _defense_judge(defense: Any) -> Callable[[NDArray[np.float32], NDArray[np.int64]], Any]:
    # one query per fresh deployment: clipped steps can make two inputs equal, and a
    # memory must not turn that into a repeat (this measures the boundary, not memory)
    def judge(x_adv: NDArray[np.float32], y: NDArray[np.int64]) -> NDArray[np.bool_]:
        labels = np.empty(len(x_adv), dtype=np.int64)
        for i in range(len(x_adv)):
            defense.reset()
            labels[i] = defense.answer(x_adv[i : i + 1]).labels[0]
        return (labels != ABSTAIN) & (labels != y)

    return judge


def _test_set_attack(mistake: NDArray[np.bool_], m: int, rng: np.random.Generator) -> float:
    """Measured ``r~`` of the deterministic test set attack against a fixed defense: the
    attacker sends the pool in a seeded random order until the first wrong answer, then
    repeats that input for the rest of its ``m`` queries (a fixed defense answers it the
    same every time). Inputs are drawn with replacement, as in the prediction."""
    order = rng.integers(0, len(mistake), size=m)
    hits = np.flatnonzero(mistake[order])
    return 0.0 if len(hits) == 0 else (m - int(hits[0])) / m


def _minimal(
    est: Any,
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    methods: dict[str, str],
    res: ResilienceConfig,
    step: Callable[[str], None],
) -> tuple[dict[str, NDArray[np.float64]], NDArray[np.bool_]]:
    """Per-input minimal perturbations in each norm of ``methods``, and which inputs
    the model classifies correctly."""
    from movingtarget.attacks.perturb.minimal import minimal_perturbation

    values: dict[str, NDArray[np.float64]] = {}
    correct = np.zeros(len(x), dtype=bool)
    for norm, method in methods.items():
        step(f"minimal L{'∞' if norm == 'inf' else '2'} perturbations ({method}, {len(x)} inputs)")
        found = minimal_perturbation(
            est,
            x,
            y,
            method=method,
            norm=norm,
            steps=res.steps,
            pgd_iter=res.pgd_iter,
            **(res.budget if method in ("deepfool", "hopskipjump") else {}),
        )
        values[norm] = found.values
        correct = found.correct
    return values, correct


def comparison_row(
    label: str,
    model: Any,
    x_test: NDArray[np.float32],
    y_test: NDArray[np.int64],
    values: dict[str, NDArray[np.float64]],
    correct: NDArray[np.bool_],
    res: ResilienceConfig,
) -> dict[str, Any]:
    """One model's row of the smoothing comparison: natural ``r`` on the whole test
    split (with its binomial s.e.), the median minimal perturbations of its correctly
    classified sample inputs (with their s.e.), and the test set attack's predicted and
    measured ``r~`` over ``res.sweep_queries`` queries on the test split."""
    from movingtarget.metrics.analytic import test_set_prediction

    mistake = np.asarray(model.predict_proba(x_test)).argmax(axis=1) != y_test
    r = float(mistake.mean())
    m = res.sweep_queries
    row: dict[str, Any] = {
        "model": label,
        "r": r,
        "r_se": math.sqrt(r * (1 - r) / len(y_test)),
        "test_inputs": len(y_test),
        "queries": m,
    }
    for norm, eps in (("2", res.eps_l2), ("inf", res.eps_linf)):
        if norm in values:
            s = summarize(values[norm][correct], eps=eps)
            row[f"median_l{norm}"], row[f"median_l{norm}_se"] = s.median, s.median_se
            row[f"below_eps_l{norm}"] = s.below_eps
    row["r_tilde_predicted"] = test_set_prediction(r, m)
    row["r_tilde_measured"] = _test_set_attack(mistake, m, np.random.default_rng(res.seed))
    se = math.sqrt(1 - r) / (r * m) if r > 0 else 0.0
    row["r_tilde_agrees"] = bool(
        abs(row["r_tilde_measured"] - row["r_tilde_predicted"]) <= 3 * se + 1 / m
    )
    return row


def threshold_sweep(
    model: Any,
    est: Any,
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    linf: NDArray[np.float64],
    correct: NDArray[np.bool_],
    res: ResilienceConfig,
) -> list[dict[str, Any]]:
    """The confidence trade-off (Papernot & McDaniel 2016): for each ``min_confidence``
    of ``res.thresholds``, the ``argmax > threshold(...)`` defense's coverage (answered
    share), accuracy on answered inputs, median minimal L∞ perturbation of answered
    correct inputs, FGSM and PGD success (a *wrong answer*; an ABSTAIN is not one) at
    ``res.eps_linf``, and the test set attack's predicted and measured ``r~`` over
    ``res.sweep_queries`` queries, with ``r`` the share of benign inputs answered wrongly."""
    from movingtarget.attacks.perturb.registry import craft
    from movingtarget.defenses import build_defense
    from movingtarget.metrics.analytic import test_set_prediction

    adv = {
        name: craft(name, est, x, y, norm="inf", eps=res.eps_linf, seed=res.seed).x_adv
        for name in ("fgsm", "pgd")
    }
    rows = []
    for t in res.thresholds:
        defense = build_defense(f"argmax > threshold(min_confidence={t!r})", model)
        labels = np.asarray(defense.answer(x).labels)
        answered = labels != ABSTAIN
        wrong = answered & (labels != y)
        r = float(wrong.mean())
        row: dict[str, Any] = {
            "min_confidence": t,
            "coverage": float(answered.mean()),
            "accuracy_answered": float((labels[answered] == y[answered]).mean())
            if answered.any()
            else float("nan"),
            "answered": int(answered.sum()),
            "median_linf_answered": summarize(linf[answered & correct], eps=res.eps_linf).median,
        }
        for name, x_adv in adv.items():
            got = np.asarray(defense.answer(x_adv).labels)
            row[f"{name}_success"] = float(((got != ABSTAIN) & (got != y))[correct].mean())
        row["r"] = r
        row["r_tilde_predicted"] = test_set_prediction(r, res.sweep_queries)
        row["r_tilde_measured"] = _test_set_attack(
            wrong, res.sweep_queries, np.random.default_rng(res.seed)
        )
        # the first mistake T is geometric: sd(T) = sqrt(1 - r) / r, and r~ = (m - T + 1) / m
        se = math.sqrt(1 - r) / (r * res.sweep_queries) if r > 0 else 0.0
        row["r_tilde_se"] = se
        row["r_tilde_agrees"] = bool(
            abs(row["r_tilde_measured"] - row["r_tilde_predicted"])
            <= 3 * se + 1 / res.sweep_queries
        )
        rows.append(row)
    return rows


def jsma_matrix(
    est: Any,
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    correct: NDArray[np.bool_],
    k: int,
    per_class: int,
) -> dict[str, Any]:
    """JSMA's targeted success from each source class to each target class (Papernot et
    al. 2016, *The limitations of deep learning in adversarial settings*): the first
    ``per_class`` correctly classified inputs of each class, each sent to every other
    class. ``success[s][t]`` is the share that reached ``t`` (the diagonal is NaN);
    ``features_changed`` the mean share of features changed on successful pairs."""
    from movingtarget.attacks.perturb.registry import craft

    picks = [np.flatnonzero(correct & (y == c))[:per_class] for c in range(k)]
    src = np.concatenate([np.repeat(p, k - 1) for p in picks]).astype(np.int64)
    tgt = np.concatenate(
        [np.tile([t for t in range(k) if t != c], len(p)) for c, p in enumerate(picks)]
    ).astype(np.int64)
    out = craft("jsma", est, x[src], y[src], target=tgt)
    hits = np.full((k, k), np.nan)
    for s_ in range(k):
        for t in range(k):
            at = (y[src] == s_) & (tgt == t)
            if s_ != t and at.any():
                hits[s_, t] = float(out.success[at].mean())
    changed = out.l0[out.success]  # already a share of the features
    return {
        "pairs": len(src),
        "success_rate": out.success_rate,
        "features_changed": float(changed.mean()) if len(changed) else float("nan"),
        "success": hits.tolist(),
    }


def run_resilience(
    config: ExperimentConfig,
    res: ResilienceConfig,
    *,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ResilienceResult:
    """Measure resilience as the module docs say; ``on_step(description)`` reports progress."""
    import time

    from movingtarget.attacks.perturb.estimators import GRADIENTS, data_range, wrap_model
    from movingtarget.attacks.perturb.minimal import minimal_perturbation
    from movingtarget.datasets import load_dataset
    from movingtarget.defenses import build_defense
    from movingtarget.defenses.near_repeat import calibrate_defense, split_unseen
    from movingtarget.models import build_model

    start = time.perf_counter()
    step = on_step or (lambda _text: None)
    dataset = load_dataset(config.dataset.name, **config.dataset.params)
    split = dataset.split(test_size=config.test_size, seed=config.split_seed)
    step("training or loading the model")
    model = build_model(
        config.model.name,
        split,
        seed=config.model_seed,
        device=device,
        cache_dir=cache_dir,
        **config.model.params,
    )
    rng = np.random.default_rng(res.seed)
    n = min(res.inputs, len(split.y_test))
    pick = np.sort(rng.choice(len(split.y_test), size=n, replace=False))
    x, y = split.x_test[pick], np.asarray(split.y_test[pick], dtype=np.int64)
    clip = data_range(split.x_train)
    est = wrap_model(model, clip_values=clip, input_shape=split.input_shape)
    grads = est.gives(GRADIENTS)
    eps = {"2": res.eps_l2, "inf": res.eps_linf}
    methods = {
        "2": _method(res.l2_method, "2", grads),
        "inf": _method(res.linf_method, "inf", grads),
    }
    values, correct = _minimal(est, x, y, methods, res, step)
    groups: list[dict[str, Any]] = []
    classes: dict[str, dict[int, dict[str, Any]]] = {}

    def add(group: str, norm: str, v: NDArray[np.float64], labels: NDArray[np.int64]) -> None:
        groups.append({"group": group, "norm": norm, **summarize(v, eps=eps[norm]).row()})
        classes[f"{group} L{norm}"] = {
            c: s.row() for c, s in per_class(v, labels, eps=eps[norm]).items()
        }

    sweep: list[dict[str, Any]] = []
    if res.thresholds and grads:
        step(f"confidence-threshold sweep ({len(res.thresholds)} values)")
        sweep = threshold_sweep(model, est, x, y, values["inf"], correct, res)
    jsma: dict[str, Any] = {}
    if res.jsma_per_class and grads:
        step(f"JSMA source × target matrix ({res.jsma_per_class} inputs per class)")
        jsma = jsma_matrix(est, x, y, correct, int(model.n_classes), res.jsma_per_class)
    # detectors calibrated on unseen inputs: test inputs outside the measured sample
    rest = np.setdiff1d(np.arange(len(split.y_test)), pick)
    unseen = split_unseen(split.x_test[rest], res.seed, 2000) if len(rest) >= 4 else None
    detection: dict[str, Any] = {}
    if res.detection_inputs and grads:
        from movingtarget.experiment.detection import centroid_detection

        step(f"centroid detector against FGSM, PGD, DeepFool, JSMA ({res.detection_inputs} each)")
        detection = centroid_detection(
            model, est, x, y, correct, unseen, clip, res, reference=split.x_train[:2000]
        )
    y_test = np.asarray(split.y_test, dtype=np.int64)
    comparison = [
        comparison_row(config.model.display, model, split.x_test, y_test, values, correct, res)
    ]
    for other in res.compare_models:
        step(f"comparison model {other}: training or loading, minimal perturbations")
        alt = build_model(other, split, seed=config.model_seed, device=device, cache_dir=cache_dir)
        alt_est = wrap_model(alt, clip_values=clip, input_shape=split.input_shape)
        alt_grads = alt_est.gives(GRADIENTS)
        alt_methods = {
            "2": _method(res.l2_method, "2", alt_grads),
            "inf": _method(res.linf_method, "inf", alt_grads),
        }
        alt_values, alt_correct = _minimal(alt_est, x, y, alt_methods, res, step)
        comparison.append(
            comparison_row(other, alt, split.x_test, y_test, alt_values, alt_correct, res)
        )
    model_label = f"model {config.model.display}"
    for norm in methods:
        add(model_label, norm, values[norm][correct], y[correct])
    calibration = split.x_train[:2000]
    for spec in config.defenses:
        defense = build_defense(spec.spec, model, name=spec.name, seed=0)
        calibrate_defense(defense, calibration, None, seed=0, unseen=unseen)
        defense.reset()
        clean = np.asarray(defense.answer(x, np.arange(n, dtype=np.int64)).labels)
        answered = correct & (clean != ABSTAIN)
        for norm in methods:
            add(f"{spec.name}: answered", norm, values[norm][answered], y[answered])
        if grads:
            step(f"defense {spec.name}: smallest perturbation to a wrong answer")
            for norm in methods:
                judged = minimal_perturbation(
                    est,
                    x,
                    y,
                    method="fgsm",
                    norm=norm,
                    steps=res.steps,
                    judge=_defense_judge(defense),
                )
                add(f"{spec.name}: wrong answer", norm, judged.values[correct], y[correct])
    return ResilienceResult(
        name=config.name,
        model=config.model.display,
        dataset=config.dataset.display,
        inputs=n,
        correct=int(correct.sum()),
        methods=methods,
        eps=eps,
        values=values,
        y=y,
        groups=groups,
        per_class=classes,
        sweep=sweep,
        jsma=jsma,
        detection=detection,
        comparison=comparison,
        seconds=time.perf_counter() - start,
        estimator=est.source,
    )
