"""Tables: measured ``r~`` beside its analytic prediction, per attack and defense."""

from __future__ import annotations

import math
from typing import Any

#: Columns of the summary table: (key, header).
TABLE_COLUMNS = (
    ("attack", "attack"),
    ("defense", "defense"),
    ("r_tilde", "r~ measured"),
    ("r_tilde_comparable", "comparable"),
    ("r_tilde_predicted", "predicted"),
    ("abstain_adversarial", "abstain (adv)"),
    ("abstain_benign", "abstain (benign)"),
    ("benign_accuracy", "benign acc"),
)


def fmt(value: Any, se: Any = None) -> str:
    """A number as ``0.9951`` (``± se`` when given); missing values as ``—``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        text = f"{value:.4f}"
        if se is not None and isinstance(se, float) and not math.isnan(se) and se > 0:
            text += f" ± {se:.4f}"
        return text
    return str(value)


def predicted_text(row: dict[str, Any]) -> str:
    """The prediction with how it compares: ``= 0.9951``, ``<= 0.0200``, ..."""
    value = row.get("r_tilde_predicted")
    kind = row.get("prediction") or ""
    if value is None or kind == "" or (isinstance(value, float) and math.isnan(value)):
        return "—"
    prefix = {"=": "=", "<=": "≤", "late": "late →", "repeats": "repeats →"}.get(kind, kind)
    return f"{prefix} {value:.4f}"


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Cells of the summary table, as strings."""
    out = []
    for row in rows:
        cells = []
        for key, _ in TABLE_COLUMNS:
            if key == "r_tilde_predicted":
                cells.append(predicted_text(row))
            elif key in ("attack", "defense"):
                cells.append(str(row[key]))
            else:
                cells.append(fmt(row.get(key), row.get(f"{key}_se")))
        out.append(cells)
    return out


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table."""
    headers = [h for _, h in TABLE_COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    return "\n".join(lines)
