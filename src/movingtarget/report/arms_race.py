"""The arms-race section of a report: ``r~`` against benign false abstention per cell
(attack x defense), the calibrations of approximate memories, and the trade-off plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from movingtarget.report.tables import fmt

#: File name of the trade-off plot in a results folder.
TRADEOFF_FILE = "tradeoff.png"


def has_arms_race(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> bool:
    """Whether the results hold approximate memories (a calibration was made)."""
    return any(run.get("calibration") for run in runs)


def calibration_lines(runs: list[dict[str, Any]]) -> list[str]:
    """One Markdown line per (defense, calibrated mechanism), from the first seed."""
    from movingtarget.memory.fingerprints.calibration import Calibration

    lines, seen = [], set()
    for run in runs:
        if run["defense"] in seen or not run.get("calibration"):
            continue
        seen.add(run["defense"])
        for c in run["calibration"]:
            lines.append(f"- **{run['defense']}** — {Calibration(**c).describe()}")
    return lines


def tradeoff_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per cell, ``r~`` beside ``r`` of the attacker's pool (the rate its bound
    speaks of), benign false abstention and all benign abstention (means ± standard
    errors over seeds)."""
    header = (
        "| attack | defense | r~ | r (attacker's pool) | r~ <= 2r | benign false abstention "
        "| benign abstention |\n"
        "|---|---|---|---|---|---|---|"
    )
    out = [header]
    for row in rows:
        r, rt = row.get("rate", row.get("r")), row.get("r_tilde")
        ok = "—" if r is None or rt is None else ("yes" if rt <= 2 * r else "no")
        out.append(
            f"| {row['attack']} | {row['defense']} | {fmt(rt, row.get('r_tilde_se'))} | "
            f"{fmt(r)} | {ok} | "
            f"{fmt(row.get('abstain_benign_false'), row.get('abstain_benign_false_se'))} | "
            f"{fmt(row.get('abstain_benign'), row.get('abstain_benign_se'))} |"
        )
    return "\n".join(out)


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def tradeoff_figure(rows: list[dict[str, Any]], title: str = "") -> Figure:
    """Left: each defense's cells as points of (benign false abstention, ``r~``), with its
    mean over attacks (large, hollow) joined across defenses (the trade-off curve).
    Right: ``r~`` per attack, one line per defense (dodged sideways so equal values show
    apart), with the ``2r`` bound. One legend, outside the panels.

    Examples
    --------
    >>> rows = [{"attack": "a", "defense": "d", "r": 0.02, "r_tilde": 0.01,
    ...          "abstain_benign_false": 0.001}]
    >>> fig = tradeoff_figure(rows)
    >>> [ax.get_title() for ax in fig.axes]
    ["trade-off: each defense's cells and their mean", 'r~ per attack']
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from movingtarget.report.plots import defense_style

    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    fig = Figure(figsize=(15, 5.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    means = []
    handles: list[Any] = []
    dodge = min(0.1, 0.6 / max(len(defenses), 1))
    for i, defense in enumerate(defenses):
        group = [r for r in rows if r["defense"] == defense]
        x = np.array([_num(r.get("abstain_benign_false")) for r in group])
        y = np.array([_num(r.get("r_tilde")) for r in group])
        style = defense_style(i)
        left.scatter(100 * x, y, s=20, alpha=0.5, color=style["color"], marker=style["marker"])
        means.append((float(np.nanmean(x)) if len(x) else math.nan, float(np.nanmean(y))))
        # the mean: large and hollow, so means that coincide still show each shape
        left.scatter(
            100 * means[-1][0], means[-1][1], s=150, marker=style["marker"],
            facecolors="none", edgecolors=style["color"], linewidths=2.0, zorder=3,
        )  # fmt: skip
        by_attack = sorted(group, key=lambda r: attacks.index(r["attack"]))
        # dodged sideways a little per defense: equal values sit side by side, not on top
        xs = [attacks.index(r["attack"]) + dodge * (i - (len(defenses) - 1) / 2) for r in by_attack]
        ry = [_num(r.get("r_tilde")) for r in by_attack]
        right.plot(xs, ry, **style, markersize=5, linewidth=1.2, alpha=0.9)
        handles.append(Line2D([], [], **style, markersize=5, linewidth=1.3, label=defense))
    order = sorted(range(len(means)), key=lambda j: means[j][0])
    left.plot([100 * means[j][0] for j in order], [means[j][1] for j in order], "k--", lw=0.8)
    handles.append(
        Line2D([], [], linestyle="none", marker="o", markerfacecolor="none",
               markeredgecolor="0.3", markeredgewidth=2.0, markersize=9,
               label="large hollow: mean over attacks")
    )  # fmt: skip
    handles.append(Line2D([], [], color="k", ls="--", lw=0.8, label="trade-off curve"))
    rates = [_num(row.get("rate", row.get("r"))) for row in rows]
    r = float(np.nanmean(rates)) if rates and not all(math.isnan(v) for v in rates) else math.nan
    if not math.isnan(r):
        handles.append(Line2D([], [], color="grey", ls=":", lw=1.2, label=f"2r = {2 * r:.3f}"))
    for ax in (left, right):
        if not math.isnan(r):
            ax.axhline(2 * r, color="grey", ls=":", lw=1.2)
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_ylim(-0.001, 1.6)  # room above r~ = 1 on the log part
        ax.grid(alpha=0.3)
        ax.set_ylabel("r~ (adversary's success rate)")
    left.set_xlabel("benign false abstention (%): fresh benign items abstained")
    left.set_title("trade-off: each defense's cells and their mean")
    right.set_xticks(range(len(attacks)))
    right.set_xticklabels(attacks, rotation=40, ha="right", fontsize=7)
    right.set_title("r~ per attack")
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_tradeoff(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Write :func:`tradeoff_figure` as a PNG at ``path``."""
    out = Path(path)
    tradeoff_figure(rows, title).savefig(out, dpi=110)
    return out


def arms_race_section(rows: list[dict[str, Any]], runs: list[dict[str, Any]], root: Path) -> str:
    """The report section (writes the plot into ``root``)."""
    plot_tradeoff(rows, root / TRADEOFF_FILE)
    lines = [
        "## Approximate memory: the arms race",
        "",
        "*Benign false abstention* is abstention on benign items sent for the first time "
        "(a memory cannot justify it by a repeat); benign exact and near-duplicates are "
        "excluded from it but counted in *benign abstention*.",
        "",
        "Calibration (thresholds chosen on training data for the target benign "
        "false-match rate; achieved rate on the held-out benign pool):",
        "",
        *calibration_lines(runs),
        "",
        tradeoff_table(rows),
        "",
        f"![r~ against benign false abstention]({TRADEOFF_FILE})",
        "",
    ]
    return "\n".join(lines)
