"""Tables: measured ``r~`` beside its analytic prediction, per attack and defense, with
the verdict, the rate each prediction uses, and whether the attacker's pool ran out."""

from __future__ import annotations

import math
from typing import Any

#: Columns of the summary table: (key, header).
TABLE_COLUMNS = (
    ("attack", "attack"),
    ("defense", "defense"),
    ("r_tilde", "r~ measured"),
    ("r_tilde_comparable", "comparable"),
    ("r_tilde_predicted", "predicted (this attacker)"),
    ("r_tilde_iid", "paper (i.i.d.)"),
    ("verdict", "verdict (z)"),
    ("rate", "r it uses"),
    ("supply", "pool n: ran out"),
    ("bound_k_over_m", "K/m"),
    ("abstain_adversarial", "abstain (adv)"),
    ("abstain_benign", "abstain (benign)"),
    ("benign_accuracy", "benign acc"),
)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any, se: Any = None) -> str:
    """A number as ``0.9951`` (``± se`` when given); missing values as ``—``."""
    if _missing(value):
        return "—"
    if isinstance(value, float):
        text = f"{value:.4f}"
        if se is not None and isinstance(se, float) and not math.isnan(se) and se > 0:
            text += f" ± {se:.4f}"
        return text
    return str(value)


def predicted_text(row: dict[str, Any]) -> str:
    """The prediction with how it compares: ``= 0.9951``, ``≤ 0.0200``, ``late ≤ 0.9``,
    with its analytic standard error where known.

    >>> predicted_text({"r_tilde_predicted": 0.5, "prediction": "late"})
    'late ≤ 0.5000'
    >>> predicted_text({"r_tilde_predicted": 0.9, "prediction": "=", "r_tilde_predicted_se": 0.01})
    '= 0.9000 ± 0.0100'
    """
    value = row.get("r_tilde_predicted")
    kind = row.get("prediction") or ""
    if kind == "" or _missing(value):
        return "—"
    prefix = {"=": "=", "<=": "≤", "late": "late ≤", "repeats": "repeats ="}.get(kind, kind)
    return f"{prefix} {fmt(float(value or 0.0), row.get('r_tilde_predicted_se'))}"


def verdict_text(row: dict[str, Any]) -> str:
    """``agrees (z = 0.4)``; the s.e. it used is named when it is the sample's.

    >>> verdict_text({"verdict": "disagrees", "z": 5.0, "se_used": "sample"})
    'disagrees (z = 5.0, sample s.e.)'
    """
    v = row.get("verdict") or "—"
    z = row.get("z")
    if v == "—" or z is None or _missing(z):
        return "—"
    z = float(z)
    zs = f"{z:.1f}" if math.isfinite(z) else ("∞" if z > 0 else "-∞")
    extra = ", sample s.e." if row.get("se_used") == "sample" else ""
    return f"{v} (z = {zs}{extra})"


def supply_text(row: dict[str, Any]) -> str:
    """The attacker's fresh inputs and when it ran out of them (in how many seeds).

    >>> supply_text({"supply": 450, "ran_out": 0, "seeds": 5})
    '450: no'
    >>> supply_text({"supply": 200, "ran_out": 5, "ran_out_at": 200.0, "seeds": 5})
    '200: at 200 (5/5)'
    """
    n = row.get("supply")
    if not n:
        return "—"
    ran, seeds = row.get("ran_out") or 0, row.get("seeds") or 0
    if not ran:
        return f"{n}: no"
    at = row.get("ran_out_at")
    return f"{n}: at {float(at or 0):.0f} ({ran}/{seeds})"


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
            elif key == "verdict":
                cells.append(verdict_text(row))
            elif key == "supply":
                cells.append(supply_text(row))
            elif key == "r_tilde_iid":
                cells.append(fmt(row.get(key)) if row.get("prediction") else "—")
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


def notes_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown bullets, one per row that needs a word: what its prediction speaks of and
    the rate it uses, warnings (too few mistakes), bounds that are asymptotic, pools
    that ran out.

    >>> notes_lines([{"attack": "a", "defense": "d", "prediction": "late", "seeds": 2,
    ...     "prediction_note": "best arm", "rate_label": "best arm: sampled error",
    ...     "rate": 0.5, "warning": "", "ran_out": 0}])[0]
    '- **a × d**: best arm; r = 0.5000 (best arm: sampled error).'
    """
    out = []
    for row in rows:
        if not row.get("prediction_note") and not row.get("warning"):
            continue
        parts = [str(row.get("prediction_note") or "no prediction")]
        if row.get("rate_label") and not _missing(row.get("rate")):
            parts[-1] += f"; r = {row['rate']:.4f} ({row['rate_label']})"
        ci = row.get("r_tilde_comparable_ci") or [None, None]
        if row.get("se_used") == "sample" and not any(_missing(v) for v in ci):
            parts.append(
                f"no analytic variance: the verdict uses the seeds' sample s.e.; 95 % "
                f"bootstrap interval of the mean [{fmt(ci[0])}, {fmt(ci[1])}]"
            )
        if row.get("ran_out") and row.get("ran_out_at") is not None:
            text = (
                f"the attacker's {row['supply']} fresh inputs ran out at query "
                f"{float(row['ran_out_at']):.0f} in {row['ran_out']} of {row['seeds']} seeds"
            )
            if not _missing(row.get("bound_k_over_m")):
                text += (
                    f"; a memorizing defense then holds it to K/m = {fmt(row['bound_k_over_m'])}"
                )
            parts.append(text)
        if row.get("warning"):
            parts.append(f"**warning**: {row['warning']}")
        out.append(f"- **{row['attack']} × {row['defense']}**: " + ". ".join(parts) + ".")
    return out
