"""The fading report: the white-box attacker's success per time window, per refresh
interval and pool size, as a Markdown table and a PNG plot of the decay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from movingtarget.report.plots import defense_style, panel_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from movingtarget.experiment.fading import FadingResult


def _label(every: int) -> str:
    return "never (fixed pool)" if every == 0 else f"every {every}"


def fading_table(rows: list[dict[str, Any]], window: int) -> list[str]:
    """Markdown lines: one row per (pool size, refresh interval), the attacker's success
    ± s.e. per window of adversarial queries, the decay (first window minus last) and
    what the refreshes did.

    >>> rows = [{"members": 5, "every": 0, "seeds": 2, "success": [0.8, 0.8],
    ...          "success_se": [0.01, 0.02], "decay": 0.0, "decay_se": 0.02, "refreshes": 0,
    ...          "rolled_back": 0, "labels": 0.0, "benign_accuracy": 0.94,
    ...          "abstain_benign": 0.02}]
    >>> fading_table(rows, 100)[2].split(" | ")[:4]
    ['| 5', 'never (fixed pool)', '0.800 ± 0.010', '0.800 ± 0.020']
    """
    n = max((len(r["success"]) for r in rows), default=0)
    windows = [f"{w * window + 1}–{(w + 1) * window}" for w in range(n)]
    head = [
        "pool size",
        "refresh",
        *windows,
        "decay (first − last)",
        "refreshes kept / rolled back",
        "labels",
        "benign accuracy",
        "benign abstention",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            str(r["members"]),
            _label(r["every"]),
            *(f"{m:.3f} ± {s:.3f}" for m, s in zip(r["success"], r["success_se"], strict=True)),
            f"{r['decay']:.3f} ± {r['decay_se']:.3f}",
            f"{r['refreshes'] - r['rolled_back']} / {r['rolled_back']}",
            f"{r['labels']:.0f}",
            f"{r['benign_accuracy']:.3f}",
            f"{r['abstain_benign']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def fading_figure(rows: list[dict[str, Any]], window: int, title: str = "") -> Figure:
    """One panel per pool size; in each, the attacker's mean success per window against
    adversarial queries sent, one line per refresh interval, with ±1 s.e. bars.

    >>> rows = [{"members": 5, "every": e, "success": [0.8, 0.5], "success_se": [0.01, 0.02]}
    ...         for e in (0, 100)]
    >>> sorted({line.get_gid() for line in fading_figure(rows, 100).axes[0].lines})
    ['fading:5:0', 'fading:5:100']
    """
    from matplotlib.figure import Figure

    sizes = list(dict.fromkeys(r["members"] for r in rows))
    intervals = list(dict.fromkeys(r["every"] for r in rows))
    n_rows, cols = panel_grid(len(sizes))
    fig = Figure(figsize=(5.4 * cols + 2.6, 3.6 * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, cols, squeeze=False)
    for ax, k in zip(axes.flat, sizes, strict=False):
        for r in (r for r in rows if r["members"] == k):
            y = np.asarray(r["success"], np.float64)
            x = (np.arange(len(y)) + 0.5) * window
            style = defense_style(intervals.index(r["every"]))
            ax.errorbar(
                x, y, yerr=r["success_se"], **style, linewidth=1.6, markersize=5, capsize=3,
                label=_label(r["every"]), gid=f"fading:{k}:{r['every']}",
            )  # fmt: skip
        ax.set_title(f"pool of {k}", fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("adversarial queries sent (window midpoint)", fontsize=9)
        ax.set_ylabel("attack success in the window", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(sizes) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="refresh", loc="outside right upper", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def write_fading_report(result: FadingResult, out: str | Path) -> Path:
    """Write ``fading.md``, ``fading.png`` and ``fading.json`` (settings, rows, runs) into
    ``out``; returns the Markdown file's path."""
    folder = Path(out)
    cfg = result.config
    rows = result.rows()
    title = f"white fading to black box: {cfg.dataset}, pools of {cfg.member}"
    fading_figure(rows, cfg.window, title).savefig(folder / "fading.png", dpi=110)
    (folder / "fading.json").write_text(
        json.dumps({"config": cfg.as_dict(), "rows": rows, "runs": result.runs}, indent=1)
    )
    text = [
        f"# {title}",
        "",
        f"The screening attacker holds an exact copy of the defense made before its first "
        f"query, screens it offline ({cfg.budget} model evaluations) and sends what it "
        f"found to the live defense, `{cfg.spec(1).replace('every=1', 'every=E')}`, "
        f"while the defense refreshes one member every `E` arrival times "
        f"(never: `{cfg.spec(0)}`).",
        "",
        f"Attack success (share of its queries answered wrong) per window of "
        f"{cfg.window} adversarial queries, mean ± s.e. over {cfg.seeds} seeds (the "
        f"seeds' sample s.e., floored at the binomial s.e. of the pooled rate); "
        f"{cfg.benign_ratio:g} benign queries per adversarial one; the oracle labels up to "
        f"{cfg.oracle_budget} asks per {cfg.oracle_window} queries, {cfg.oracle_delay} "
        f"queries late. {result.seconds:.0f} s.",
        "",
        *fading_table(rows, cfg.window),
        "",
        "![attack success per window](fading.png)",
        "",
    ]
    path = folder / "fading.md"
    path.write_text("\n".join(text))
    return path
