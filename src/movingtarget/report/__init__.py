"""The report box: Markdown tables and PNG plots from a results folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from movingtarget.errors import DataError
from movingtarget.report.arms_race import arms_race_section, has_arms_race, plot_tradeoff
from movingtarget.report.plots import plot_r_tilde, r_tilde_figure
from movingtarget.report.tables import (
    TABLE_COLUMNS,
    fmt,
    markdown_table,
    predicted_text,
    table_rows,
)

PLOT_FILE = "r_tilde.png"


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist: is this a results folder?") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def defenses_section(meta: dict[str, Any]) -> list[str]:
    """Markdown lines: each defense's name and its composition, mechanisms in the order
    they run (from ``experiment.json``; nothing when it records no compositions).

    >>> print("\\n".join(defenses_section({"compositions": {"deterministic": "argmax"}})))
    ## Defenses
    <BLANKLINE>
    | defense | composition (mechanisms in the order they run) |
    |---|---|
    | deterministic | `argmax` |
    <BLANKLINE>
    """
    compositions = meta.get("compositions")
    if not isinstance(compositions, dict) or not compositions:
        return []
    lines = [
        "## Defenses",
        "",
        "| defense | composition (mechanisms in the order they run) |",
        "|---|---|",
    ]
    lines += [f"| {name} | `{text}` |" for name, text in compositions.items()]
    return [*lines, ""]


def write_report(results_dir: str | Path) -> Path:
    """Write ``report.md`` and the plot for a results folder; return the report's path."""
    root = Path(results_dir)
    rows = _load(root / "summary.json")
    runs = _load(root / "runs.json")
    meta = _load(root / "experiment.json")
    plot_r_tilde(
        runs,
        root / PLOT_FILE,
        title=f"{meta['name']}: {meta['dataset']}, {meta['model']}",
        rows=rows,
    )
    r = meta.get("r")
    lines = [
        f"# {meta['name']}",
        "",
        f"Dataset **{meta['dataset']}**, model **{meta['model']}**, natural error "
        f"r = {fmt(r)}, m = {meta['queries']} adversarial queries per deployment, "
        f"seeds {meta['seeds']}.",
        "",
        "`r~` is the share of an adversary's queries answered as it wanted (a wrong class, "
        "or its target). *comparable* is the measurement the prediction speaks of: the "
        "whole run (`=`, `≤`), its second half (`late`), or repeated queries only "
        "(`repeats`). Values are means over seeds ± one standard error.",
        "",
        markdown_table(rows),
        "",
        *defenses_section(meta),
        f"![cumulative r~ against queries sent, with the predictions]({PLOT_FILE})",
        "",
        "In the plot each defense's measured curve (solid, with markers) has its "
        "prediction beside it in the same colour: dashed, the expected cumulative r~ "
        "after t queries (`=`); dotted, the bound r (`≤`); a band over the second half "
        "(`late`); a star at the end (`repeats`).",
        "",
        "Event logs (one row per query) are in `logs/`.",
        "",
    ]
    if has_arms_race(rows, runs):
        lines += [arms_race_section(rows, runs, root)]
    report = root / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


__all__ = [
    "PLOT_FILE",
    "TABLE_COLUMNS",
    "defenses_section",
    "fmt",
    "markdown_table",
    "plot_r_tilde",
    "plot_tradeoff",
    "predicted_text",
    "r_tilde_figure",
    "table_rows",
    "write_report",
]
