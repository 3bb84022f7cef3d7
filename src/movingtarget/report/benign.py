"""The benign-users table of the experiment report: what each defense cost the users
it serves, whichever attacker shared the deployment.

Per defense, over every run (all attacks, all seeds): *accuracy*, the share of benign
queries answered with their true class (an abstention counts as not correct);
*accuracy (answered)*, the same among the queries the defense answered; and
*abstention*, overall, on fresh (i.i.d.) queries and on near-duplicates of earlier
benign queries. A defense that refuses more keeps its answered accuracy and pays in
abstention: the two are read together.
"""

from __future__ import annotations

import math
from typing import Any

from movingtarget.report.tables import fmt

#: (run key, header) of the table's value columns.
BENIGN_COLUMNS = (
    ("benign_accuracy", "accuracy"),
    ("benign_accuracy_answered", "accuracy (answered)"),
    ("abstain_benign", "abstention"),
    ("abstain_benign_false", "abstention, fresh (i.i.d.)"),
    ("abstain_benign_near", "abstention, near-duplicates"),
)


def mean_se(values: list[Any]) -> tuple[float, float]:
    """Mean and standard error of the finite numbers in ``values`` (NaN when none; the
    s.e. is NaN for a single value).

    >>> mean_se([0.5, 0.7, None])
    (0.6, 0.1)
    """
    vals = [
        float(v)
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]
    if not vals:
        return float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return round(mean, 12), round(math.sqrt(var / len(vals)), 12)


def benign_table(runs: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per defense (in first-seen order), each column's mean and s.e. over its runs.

    >>> runs = [{"defense": "d", "benign_accuracy": 0.9}, {"defense": "d", "benign_accuracy": 0.8}]
    >>> benign_table(runs)["d"]["benign_accuracy"]
    (0.85, 0.05)
    """
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name in dict.fromkeys(r["defense"] for r in runs):
        group = [r for r in runs if r["defense"] == name]
        out[name] = {key: mean_se([r.get(key) for r in group]) for key, _ in BENIGN_COLUMNS}
    return out


def benign_lines(runs: list[dict[str, Any]]) -> list[str]:
    """The Markdown section (empty without runs or without benign traffic).

    >>> runs = [{"defense": "d", "benign_accuracy": 0.9, "benign_queries": 10}]
    >>> print(benign_lines(runs)[-2])
    | d | 0.9000 | — | — | — | — |
    """
    if not runs or not any(r.get("benign_queries") for r in runs):
        return []
    header = " | ".join(h for _, h in BENIGN_COLUMNS)
    lines = [
        "## What benign users got",
        "",
        "Per defense, over every run (all attacks and seeds; ± one s.e.): *accuracy* counts "
        "an abstention as not correct; *accuracy (answered)* is among the answered benign "
        "queries; *abstention* is overall, on fresh (i.i.d.) queries, and on near-duplicates "
        "of earlier benign queries (— when the runs sent none).",
        "",
        f"| defense | {header} |",
        "|---|" + "---|" * len(BENIGN_COLUMNS),
    ]
    for name, cols in benign_table(runs).items():
        cells = " | ".join(fmt(*cols[key]) for key, _ in BENIGN_COLUMNS)
        lines.append(f"| {name} | {cells} |")
    return [*lines, "", *update_lines(runs)]


def update_lines(runs: list[dict[str, Any]]) -> list[str]:
    """One line per defense whose model learned from labels (gated updates): updates
    per deployment and how many were rolled back for losing canary accuracy.

    >>> update_lines([{"defense": "d", "updates": 4, "updates_rolled_back": 1}])
    ['Gated model updates: d 4.0 per deployment, 1.0 rolled back.', '']
    """
    parts = []
    for name in dict.fromkeys(r["defense"] for r in runs):
        group = [r for r in runs if r["defense"] == name]
        if any(r.get("updates") for r in group):
            n = sum(r.get("updates", 0) for r in group) / len(group)
            back = sum(r.get("updates_rolled_back", 0) for r in group) / len(group)
            parts.append(f"{name} {n:.1f} per deployment, {back:.1f} rolled back")
    return [f"Gated model updates: {'; '.join(parts)}.", ""] if parts else []
