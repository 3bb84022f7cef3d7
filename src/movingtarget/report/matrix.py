"""``r~`` at a glance: one row per attack, one column per defense, the lowest ``r~`` of
each row in bold, and below them what benign users got under each defense."""

from __future__ import annotations

import math
from typing import Any

from movingtarget.report.benign import benign_table
from movingtarget.report.tables import fmt


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def matrix_lines(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    """The Markdown table (no heading): ``r~ ± s.e.`` per attack × defense, then benign
    accuracy on answered queries and benign abstention (fresh / near-duplicate) per
    defense.

    >>> rows = [{"attack": "a", "defense": "d1", "r_tilde": 0.9, "r_tilde_se": 0.01},
    ...         {"attack": "a", "defense": "d2", "r_tilde": 0.1, "r_tilde_se": 0.01}]
    >>> print(matrix_lines(rows, [])[2])
    | a | 0.9000 ± 0.0100 | **0.1000 ± 0.0100** |
    """
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    cell = {(r["attack"], r["defense"]): r for r in rows}
    lines = [
        f"| `r~` (± s.e.) | {' | '.join(defenses)} |",
        "|---|" + "---|" * len(defenses),
    ]
    for attack in attacks:
        values = [cell.get((attack, d), {}).get("r_tilde") for d in defenses]
        best = min((float(v) for v in values if v is not None and _finite(v)), default=None)
        cells = []
        for d, v in zip(defenses, values, strict=True):
            text = fmt(v, cell.get((attack, d), {}).get("r_tilde_se"))
            cells.append(f"**{text}**" if best is not None and v == best else text)
        lines.append(f"| {attack} | {' | '.join(cells)} |")
    if runs:
        benign = benign_table(runs)
        for key, label in (
            ("benign_accuracy_answered", "benign accuracy (answered)"),
            ("abstain_benign_false", "benign abstention, fresh (i.i.d.)"),
            ("abstain_benign_near", "benign abstention, near-duplicates"),
        ):
            cells = [fmt(benign[d][key][0]) if d in benign else "—" for d in defenses]
            lines.append(f"| {label} | {' | '.join(cells)} |")
    return lines
