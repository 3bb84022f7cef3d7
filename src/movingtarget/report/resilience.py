"""The resilience report: a table per group, the per-class figures, a histogram of the
model's minimal perturbations and a per-class box plot (``resilience.md``, PNGs, JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from movingtarget.experiment.resilience import ResilienceResult


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    if isinstance(v, float):
        return "inf" if not np.isfinite(v) else f"{v:.4g}"
    return str(v)


def _norm_label(norm: str) -> str:
    return "L∞" if norm == "inf" else "L2"


def summary_lines(result: ResilienceResult) -> list[str]:
    """The Markdown table of every group (model, each defense's answered inputs and
    wrong answers), one row per group and norm."""
    lines = [
        "| group | norm | inputs | median | ± s.e. | 10th percentile | share ≤ eps | eps "
        "| none found |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in result.groups:
        lines.append(
            f"| {g['group']} | {_norm_label(g['norm'])} | {g['n']} | {_fmt(g['median'])} | "
            f"{_fmt(g['median_se'])} | {_fmt(g['p10'])} | {_fmt(g['below_eps'])} | "
            f"{_fmt(g['eps'])} | {g['not_found']} |"
        )
    return lines


def sweep_lines(result: ResilienceResult) -> list[str]:
    """The confidence-threshold sweep as a Markdown table (empty without a sweep)."""
    if not result.sweep:
        return []
    lines = [
        "| min_confidence | coverage | accuracy on answered | median L∞ of answered | "
        "FGSM success | PGD success | r | test set r~ predicted | measured | agree |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result.sweep:
        lines.append(
            f"| {row['min_confidence']:g} | {row['coverage']:.3f} | "
            f"{_fmt(row['accuracy_answered'])} | {_fmt(row['median_linf_answered'])} | "
            f"{row['fgsm_success']:.3f} | {row['pgd_success']:.3f} | {row['r']:.4f} | "
            f"{row['r_tilde_predicted']:.3f} | {row['r_tilde_measured']:.3f} | "
            f"{'yes' if row['r_tilde_agrees'] else 'NO'} |"
        )
    return lines


def detection_lines(result: ResilienceResult) -> list[str]:
    """The centroid detector's table (empty when it was not measured)."""
    d = result.detection
    if not d:
        return []
    lines = [
        "| inputs | crafted | attack success | median L∞ | scored | AUC | ± s.e. "
        "| above threshold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in d["rows"]:
        lines.append(
            f"| {row['inputs']} | {row['crafted']} | {_fmt(row['success_rate'])} | "
            f"{_fmt(row['median_linf'])} | {row['n_attacked']} | {_fmt(row['auc'])} | "
            f"{_fmt(row['se'])} | {_fmt(row['detected'])} |"
        )
    return lines


def comparison_lines(result: ResilienceResult) -> list[str]:
    """The model comparison (the smoothing baselines beside the config's model)."""
    if len(result.comparison) < 2:
        return []
    lines = [
        "| model | natural r | ± s.e. | median L∞ | ± s.e. | median L2 | ± s.e. "
        "| test set r~ predicted | measured | agree |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result.comparison:
        lines.append(
            f"| {row['model']} | {row['r']:.4f} | {row['r_se']:.4f} | "
            f"{_fmt(row.get('median_linf'))} | {_fmt(row.get('median_linf_se'))} | "
            f"{_fmt(row.get('median_l2'))} | {_fmt(row.get('median_l2_se'))} | "
            f"{row['r_tilde_predicted']:.3f} | {row['r_tilde_measured']:.3f} | "
            f"{'yes' if row['r_tilde_agrees'] else 'NO'} |"
        )
    return lines


def _sweep_plot(result: ResilienceResult, out: Path) -> list[str]:
    from matplotlib.figure import Figure

    if not result.sweep:
        return []
    t = [row["min_confidence"] for row in result.sweep]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for key, label in (
        ("coverage", "coverage"),
        ("accuracy_answered", "accuracy on answered"),
        ("fgsm_success", f"FGSM success (eps {result.eps['inf']:g})"),
        ("pgd_success", f"PGD success (eps {result.eps['inf']:g})"),
        ("r_tilde_measured", "test set attack r~ (measured)"),
    ):
        ax.plot(t, [row[key] for row in result.sweep], marker="o", label=label)
    ax.set_xlabel("threshold min_confidence")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    fig.savefig(out / "resilience_sweep.png", dpi=110)
    return ["resilience_sweep.png"]


def _jsma_plot(result: ResilienceResult, out: Path) -> list[str]:
    from matplotlib.figure import Figure

    if not result.jsma:
        return []
    hits = np.array(result.jsma["success"], dtype=float)
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(hits, vmin=0, vmax=1, cmap="viridis")
    for (s, t), v in np.ndenumerate(hits):
        if np.isfinite(v):
            ax.text(
                t,
                s,
                f"{v:.1f}",
                ha="center",
                va="center",
                fontsize=7,
                color="k" if v > 0.6 else "w",
            )
    ax.set_xlabel("target class")
    ax.set_ylabel("source class")
    ax.set_xticks(range(len(hits)))
    ax.set_yticks(range(len(hits)))
    ax.set_title("JSMA targeted success")
    fig.colorbar(image, ax=ax)
    fig.savefig(out / "resilience_jsma.png", dpi=110)
    return ["resilience_jsma.png"]


def _plots(result: ResilienceResult, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = []
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, len(result.values))
    for ax, (norm, values) in zip(np.atleast_1d(axes), result.values.items(), strict=True):
        finite = values[np.isfinite(values) & (values > 0)]
        ax.hist(finite, bins=40, color="C0")
        ax.axvline(
            result.eps[norm], color="C3", linestyle="--", label=f"eps = {result.eps[norm]:g}"
        )
        ax.set_xlabel(f"minimal {_norm_label(norm)} perturbation ({result.methods[norm]})")
        ax.set_ylabel("inputs")
        ax.legend()
    fig.suptitle(f"{result.name}: resilience of {result.model} on {result.dataset}")
    fig.savefig(out / "resilience_hist.png", dpi=110)
    names.append("resilience_hist.png")

    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, len(result.values))
    for ax, (norm, values) in zip(np.atleast_1d(axes), result.values.items(), strict=True):
        ok = np.isfinite(values) & (values > 0)
        classes = np.unique(result.y)
        data = [values[ok & (result.y == c)] for c in classes]
        ax.boxplot(data, tick_labels=[str(c) for c in classes])
        ax.set_xlabel("true class")
        ax.set_ylabel(f"minimal {_norm_label(norm)} perturbation")
    fig.suptitle("minimal perturbation per true class (correctly classified inputs)")
    fig.savefig(out / "resilience_classes.png", dpi=110)
    names.append("resilience_classes.png")
    return names


def write_resilience_report(result: ResilienceResult, out: str | Path) -> Path:
    """Write ``resilience.md``, ``resilience.json`` and the two plots into ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "resilience.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    plots = _plots(result, folder)
    plots += _sweep_plot(result, folder) + _jsma_plot(result, folder)
    lines = [
        f"# Resilience: {result.name}",
        "",
        f"{result.model} on {result.dataset}: {result.inputs} held-out inputs, "
        f"{result.correct} classified correctly. Minimal perturbation that changes the "
        f"class (Papernot & McDaniel 2016): L2 by `{result.methods['2']}`, L∞ by "
        f"`{result.methods['inf']}`, through {result.estimator or 'the model'}. A defense's "
        "*answered* rows are the model's figures "
        "over the inputs it answers; its *wrong answer* rows are the smallest step along "
        "the FGSM ray to a wrong answer from the defense (an ABSTAIN is not one; compare with "
        "the `deterministic` defense's row, the same ray without abstention). "
        "`inf`: no perturbation within the data's box changed the class.",
        "",
        *summary_lines(result),
        "",
        "## Per true class",
        "",
    ]
    for group, table in result.per_class.items():
        if not group.startswith("model "):
            continue  # the defenses' per-class figures are in resilience.json
        lines += [f"**{group}**", "", "| class | inputs | median | 10th percentile | share ≤ eps |"]
        lines.append("|---|---|---|---|---|")
        for c, s in table.items():
            lines.append(
                f"| {c} | {s['n']} | {_fmt(s['median'])} | {_fmt(s['p10'])} | "
                f"{_fmt(s['below_eps'])} |"
            )
        lines.append("")
    if result.sweep:
        lines += [
            "## Confidence threshold",
            "",
            "`argmax > threshold(min_confidence=t)` over the same inputs: a higher threshold "
            "answers fewer inputs, more of them right, and lowers the attacks' success, but "
            "the test set attack still finds a wrong answer whenever `r > 0` and repeats it "
            "(Goodfellow 2019). Success counts wrong answers among the correctly classified "
            "inputs; `r` is the share of benign inputs answered wrongly; `agree`: measured "
            "within 3 s.e. (+1/m) of the prediction.",
            "",
            *sweep_lines(result),
            "",
        ]
    if result.jsma:
        j = result.jsma
        lines += [
            "## JSMA: source × target",
            "",
            f"{j['pairs']} source–target pairs: targeted success {j['success_rate']:.1%}, "
            f"{j['features_changed']:.1%} of features changed on successful pairs "
            "(Papernot et al. 2016 on MNIST: 97.05 % with 4.02 %). Matrix in "
            "`resilience_jsma.png` and `resilience.json`.",
            "",
        ]
    if result.detection:
        d = result.detection
        c = d["calibration"]
        where = (
            "a seeded half of the measured sample (the model never trained on it), the "
            "other half measured"
            if d.get("calibrated_on_half_of_sample")
            else "benign test inputs outside the measured sample (the model never trained "
            f"on them); {_fmt(c['heldout_rate'])} false alarms on {c['n_heldout']} others"
        )
        lines += [
            "## Centroid-closeness detection",
            "",
            "The score of `centroid(...)`: distance to the centroid of the class the model "
            "gives over that plus the distance to the nearest other class's centroid "
            "(Papernot & McDaniel 2016); centroids fitted on training inputs, threshold "
            f"calibrated for {d['false_alarm']:.1%} false alarms on {c['n_calibration']} "
            f"inputs of {where}; "
            f"{d['benign_alarms']:.1%} false alarms on the {d['benign']} measured clean "
            "inputs. Each attack crafts from the correctly "
            "classified inputs; its successful examples are scored. AUC: the chance that "
            "an attacked input scores above a clean one (Hanley-McNeil s.e.); near-duplicates "
            "near 0.5 mean the score does not react to mere noise.",
            "",
            *detection_lines(result),
            "",
        ]
    if len(result.comparison) > 1:
        lines += [
            "## Smoothing baselines",
            "",
            "Each model is a *fixed* defense. Boundary smoothing (adversarial or noise "
            "training) should raise the minimal perturbation (Papernot & McDaniel 2016) "
            "while leaving the natural error `r`, and so the test set attack's "
            "`r~ = (m - 1/r)/m`, where they were (Goodfellow 2019). `r` over the whole test "
            "split; medians over each model's correctly classified sample inputs; `r~` "
            f"over m = {result.comparison[0]['queries']} queries on the test split.",
            "",
            *comparison_lines(result),
            "",
        ]
    lines += [f"![{name}]({name})" for name in plots]
    lines.append(f"\n{result.seconds:.1f} s.\n")
    path = folder / "resilience.md"
    path.write_text("\n".join(lines))
    return path
