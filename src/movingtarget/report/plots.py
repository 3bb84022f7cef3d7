"""Plots: cumulative adversarial error against queries sent, one line per defense."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_r_tilde(runs: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """One panel per attack; in each, the mean cumulative ``r~`` curve of every defense."""
    # a bare Figure renders with Agg and skips pyplot's import and global state
    from matplotlib.figure import Figure

    attacks = list(dict.fromkeys(r["attack"] for r in runs))
    defenses = list(dict.fromkeys(r["defense"] for r in runs))
    cols = min(len(attacks), 2)
    rows = (len(attacks) + cols - 1) // cols
    fig = Figure(figsize=(6 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, attack in zip(axes.flat, attacks, strict=False):
        for defense in defenses:
            group = [r for r in runs if r["attack"] == attack and r["defense"] == defense]
            if not group:
                continue
            x = np.asarray(group[0]["curve_x"])
            ys = [np.asarray(g["curve_y"]) for g in group if len(g["curve_y"]) == len(x)]
            ax.plot(x, np.mean(ys, axis=0), label=defense, linewidth=1.6)
        ax.set_title(attack)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("adversarial queries sent")
        ax.set_ylabel("r~ so far")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(attacks) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    ncol = min(len(labels), 5 if cols > 1 else 3) or 1
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
    if title:
        fig.suptitle(title)
    # fixed margins in inches: tight_layout would render the whole figure once more
    width, height = 6.0 * cols, 3.6 * rows
    legend_rows = -(-len(labels) // ncol)
    fig.subplots_adjust(
        left=0.75 / width,
        right=1 - 0.2 / width,
        top=1 - (0.55 if title else 0.3) / height,
        bottom=(0.65 + 0.25 * legend_rows) / height,
        hspace=0.55,
        wspace=0.22,
    )
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out
