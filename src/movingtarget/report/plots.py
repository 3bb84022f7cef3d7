"""Plots: cumulative adversarial error against queries sent, one line per defense, with
the analytic prediction beside each measured curve."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Markers of the defenses, in order: lines that coincide still show apart.
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "h")
#: How each kind of prediction is drawn (in its defense's colour).
PREDICTION_STYLE = {
    "=": {"linestyle": (0, (5, 2.5)), "linewidth": 1.2},
    "<=": {"linestyle": (0, (1, 1.5)), "linewidth": 1.6},
    "late": {"linestyle": "-", "linewidth": 5.0, "alpha": 0.3, "solid_capstyle": "butt"},
    "repeats": {"linestyle": "none", "marker": "*", "markersize": 12, "markeredgecolor": "k"},
}
#: What each kind means, for the legend.
PREDICTION_LABEL = {
    "=": "predicted: expected r~ after t queries",
    "<=": "predicted bound on r~",
    "late": "bound on r~ of the second half (late; approached as m grows)",
    "repeats": "predicted r~ on repeated queries",
}


def defense_style(i: int) -> dict[str, Any]:
    """Colour and marker of the ``i``-th defense (the same in every plot)."""
    return {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)]}


def panel_grid(n: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels: rows of up to 2, 3 or 4 (a 12-attack grid reads as
    three rows of four)."""
    cols = 1 if n <= 1 else 2 if n <= 4 else 3 if n <= 9 else 4
    return -(-n // cols), cols


def _mean_curve(group: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    x = np.asarray(group[0].get("curve_x", []), dtype=np.float64)
    ys = [np.asarray(g["curve_y"], dtype=np.float64) for g in group if len(g["curve_y"]) == len(x)]
    if not len(x) or not ys:
        return None
    return x, np.mean(ys, axis=0)


def _prediction_line(row: dict[str, Any], x_end: float) -> tuple[str, list[float], list[float]]:
    """(kind, x, y) of one defense's prediction as drawn; kind "" when there is none."""
    kind = row.get("prediction") or ""
    value = row.get("r_tilde_predicted")
    if kind not in PREDICTION_STYLE or value is None or not math.isfinite(float(value)):
        return "", [], []
    px, py = row.get("curve_predicted_x"), row.get("curve_predicted_y")
    if kind in ("=", "<=") and px and py and len(px) == len(py):
        return kind, [float(v) for v in px], [float(v) for v in py]
    if kind == "late":  # the late phase is the second half of the run
        return kind, [x_end / 2, x_end], [float(value)] * 2
    return kind, [x_end], [float(value)]  # repeats, or an older folder: the value at m


def _draw_predictions(ax: Any, lines: list[tuple[str, list[float], list[float], str, str]]) -> None:
    """Draw the predictions of one panel: (kind, x, y, colour, gid) each. Curves that
    coincide (equal predictions) share their dashes in turn, so every colour shows."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for j, (kind, x, y, _, _) in enumerate(lines):
        key = (kind, tuple(np.round(x, 6)), tuple(np.round(y, 4)))
        groups.setdefault(key, []).append(j)
    for members in groups.values():
        for turn, j in enumerate(members):
            kind, x, y, color, gid = lines[j]
            style: dict[str, Any] = {**PREDICTION_STYLE[kind], "color": color, "gid": gid}
            dash = style.get("linestyle")
            if len(members) > 1 and isinstance(dash, tuple):
                on, off = dash[1]
                period = (on + off) * len(members)
                style["linestyle"] = (turn * (on + off), (on, period - on))
            if len(x) == 1 and kind != "repeats":  # a value at m only: a short tick
                style.update(linestyle="none", marker="_", markersize=14)
            ax.plot(x, y, **style, zorder=3)


def r_tilde_figure(
    runs: list[dict[str, Any]],
    rows: list[dict[str, Any]] | None = None,
    title: str = "",
) -> Figure:
    """One panel per attack; in each, every defense's mean cumulative ``r~`` curve and, in
    its colour, the analytic prediction from ``rows`` (the summary): ``=`` as a dashed
    curve, ``<=`` as a dotted bound, ``late`` as a band over the second half, ``repeats``
    as a star at the end. The legend sits outside the panels.

    Examples
    --------
    >>> runs = [{"attack": "a", "defense": "d", "curve_x": [1, 2, 4], "curve_y": [0, .5, .75]}]
    >>> rows = [{"attack": "a", "defense": "d", "prediction": "<=", "r_tilde_predicted": 0.1,
    ...          "curve_predicted_x": [1, 2, 4], "curve_predicted_y": [0.1, 0.1, 0.1]}]
    >>> fig = r_tilde_figure(runs, rows)
    >>> sorted(line.get_gid() for line in fig.axes[0].lines)
    ['measured:a:d', 'predicted:a:d']
    """
    # a bare Figure renders with Agg and skips pyplot's import and global state
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    attacks = list(dict.fromkeys(r["attack"] for r in runs))
    defenses = list(dict.fromkeys(r["defense"] for r in runs))
    summary = {(r["attack"], r["defense"]): r for r in rows or []}
    n_rows, cols = panel_grid(len(attacks))
    panel_w, panel_h = (5.4, 3.5) if cols <= 2 else (4.3, 3.1)
    fig = Figure(figsize=(panel_w * cols + 3.4, panel_h * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, cols, squeeze=False)
    kinds: set[str] = set()
    unpredicted = False
    for ax, attack in zip(axes.flat, attacks, strict=False):
        x_end = 1.0
        predictions: list[tuple[str, list[float], list[float], str, str]] = []
        for i, defense in enumerate(defenses):
            group = [r for r in runs if r["attack"] == attack and r["defense"] == defense]
            curve = _mean_curve(group) if group else None
            if curve is None:
                continue
            x, y = curve
            x_end = max(x_end, float(x[-1]))
            style = defense_style(i)
            ax.plot(
                x, y, **style, linewidth=1.6, markersize=4.5, label=defense,
                markevery=(0.013 * i, 0.09), gid=f"measured:{attack}:{defense}", zorder=4,
            )  # fmt: skip
            kind, px, py = _prediction_line(summary.get((attack, defense), {}), float(x[-1]))
            if kind:
                gid = f"predicted:{attack}:{defense}"
                predictions.append((kind, px, py, style["color"], gid))
            kinds.add(kind)
            unpredicted |= kind == ""
        _draw_predictions(ax, predictions)
        ax.set_title(attack, fontsize=10)
        ax.set_xscale("log")
        ax.set_xlim(1, max(x_end, 2.0) * 1.05)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("adversarial queries sent", fontsize=9)
        ax.set_ylabel("r~ so far", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(attacks) :]:
        ax.axis("off")
    handles: list[Any] = [
        Line2D([], [], linewidth=1.6, markersize=5, **defense_style(i), label=d)
        for i, d in enumerate(defenses)
    ]
    for kind in PREDICTION_STYLE:
        if kind in kinds:
            style = {**PREDICTION_STYLE[kind], "color": "0.35"}
            handles.append(Line2D([], [], **style, label=PREDICTION_LABEL[kind]))
    if rows is not None and unpredicted:
        handles.append(Line2D([], [], linestyle="none", label="no mark: no closed form"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_r_tilde(
    runs: list[dict[str, Any]],
    path: str | Path,
    title: str = "",
    rows: list[dict[str, Any]] | None = None,
) -> Path:
    """Write :func:`r_tilde_figure` as a PNG at ``path``."""
    out = Path(path)
    r_tilde_figure(runs, rows, title).savefig(out, dpi=110)
    return out
