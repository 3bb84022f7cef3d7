"""The report box: Markdown tables and PNG plots from a results folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from movingtarget.errors import DataError
from movingtarget.metrics.analytic import Z_MAX
from movingtarget.report.arms_race import arms_race_section, has_arms_race, plot_tradeoff
from movingtarget.report.benign import benign_lines
from movingtarget.report.matrix import matrix_lines
from movingtarget.report.plots import plot_r_tilde, r_tilde_figure
from movingtarget.report.stateful import stateful_lines
from movingtarget.report.tables import (
    TABLE_COLUMNS,
    fmt,
    markdown_table,
    notes_lines,
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


def header_lines(meta: dict[str, Any]) -> list[str]:
    """The report's opening: dataset, model, each natural error rate by name, the pools,
    m, the seeds and what they vary.

    >>> print(header_lines({"dataset": "digits", "model": "logistic", "r": 0.05,
    ...     "queries": 400, "seeds": [0, 1]})[0])  # doctest: +ELLIPSIS
    Dataset **digits**, model **logistic**, m = 400 adversarial queries per deployment...
    """
    lines = [
        f"Dataset **{meta['dataset']}**, model **{meta['model']}**, m = {meta['queries']} "
        f"adversarial queries per deployment, seeds {meta['seeds']}.",
        "",
        f"- natural error (argmax) on the whole test split: r = {fmt(meta.get('r'))}",
    ]
    if "r_attacker" in meta:
        lines.append(f"- on the attacker's pool: r = {fmt(meta.get('r_attacker'))}")
        lines.append(f"- on the benign pool: r = {fmt(meta.get('r_benign'))}")
    sizes = meta.get("pool_sizes") or {}
    if sizes:
        lines.append(
            f"- pools: {sizes.get('attacker')} attacker inputs, {sizes.get('benign')} benign "
            f"inputs, disjoint; {sizes.get('duplicates_dropped', 0)} byte-identical test rows "
            "dropped before splitting, so no benign user sends what the attacker sent"
        )
    resample = meta.get("resample")
    if resample == "data":
        lines.append(
            "- seeds redraw the split, retrain the model and redraw the pools (`resample = "
            '"data"`): the spread covers the data; the rates above are means over seeds'
        )
    elif resample:
        lines.append(
            "- seeds vary the orderings (attacker, defense, benign traffic: independent "
            'streams) over one split and its pools (`resample = "order"`)'
        )
    return lines


def _notes_section(rows: list[dict[str, Any]]) -> list[str]:
    notes = notes_lines(rows)
    return ["## Notes per row", "", *notes, ""] if notes else []


def then_section(root: Path, meta: dict[str, Any]) -> list[str]:
    """Markdown lines for the experiments run after this one (the config's ``then``),
    each from its own subfolder: its matrix, its predictions, its plot, a link to its
    report (nothing when there are none)."""
    lines: list[str] = []
    for name in meta.get("then") or []:
        sub = root / str(name)
        rows, runs = _load(sub / "summary.json"), _load(sub / "runs.json")
        sub_meta = _load(sub / "experiment.json")
        judged = [r for r in rows if r.get("verdict") in ("agrees", "disagrees", "exceeds")]
        agree = sum(r["verdict"] == "agrees" for r in judged)
        lines += [
            f"## Then: {sub_meta['name']}",
            "",
            *header_lines(sub_meta)[:1],
            "",
            *matrix_lines(rows, runs),
            "",
            f"Analytic predictions (where the paper gives them): {agree} of {len(judged)} "
            f"rows agree. The whole report, with every column, the predictions and the "
            f"compositions: [{name}/report.md]({name}/report.md).",
            "",
            f"![cumulative r~ against queries sent]({name}/{PLOT_FILE})",
            "",
        ]
    return lines


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
    lines = [
        f"# {meta['name']}",
        "",
        *header_lines(meta),
        "",
        "`r~` is the share of an adversary's queries answered as it wanted (a wrong class, "
        "or its target). *comparable* is the measurement the prediction speaks of: the "
        "whole run (`=`, `≤`), its second half (`late`), or repeated queries only "
        "(`repeats`). Values are means over seeds ± one standard error. *predicted* is for "
        "the attacker the arena ran: it explores its own pool without replacement (and a "
        "rate tracker only its own arms), so it can differ from the paper's i.i.d. formula, "
        "given beside it. *verdict* compares the two: `z` is the difference in standard "
        f"errors, analytic where the law's variance is known (else the seeds' sample s.e.); "
        f"a row agrees when |z| ≤ {Z_MAX:g} (`=`) or z ≤ {Z_MAX:g} (a bound, `≤`; above "
        "it the bound is *exceeded*: for approximate memorization, the noise beat the "
        "fingerprint; a noisy repeat's `=` disagrees where the noise changes the model's "
        f"answer). *r it "
        "uses* is the rate of the attacker's own inputs under that defense (named in the "
        "notes). *pool n: ran out* is how many fresh inputs the attacker had and when it had "
        "sent them all (then it can only repeat: against memorization r~ is held to "
        "*K/m*, K of them answered as it wants, which is not the paper's mechanism). "
        "A `late` bound is the best arm's rate, approached only as m grows.",
        "",
        markdown_table(rows),
        "",
        "## `r~` at a glance",
        "",
        "The lowest `r~` of each attack in bold; below, what benign users got.",
        "",
        *matrix_lines(rows, runs),
        "",
        *then_section(root, meta),
        *_notes_section(rows),
        *stateful_lines(rows, runs),
        "",
        *benign_lines(runs),
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
    "header_lines",
    "markdown_table",
    "notes_lines",
    "plot_r_tilde",
    "plot_tradeoff",
    "predicted_text",
    "r_tilde_figure",
    "table_rows",
    "then_section",
    "write_report",
]
