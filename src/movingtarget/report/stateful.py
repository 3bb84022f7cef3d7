"""The stateful-defense table of the experiment report.

For each attack × defense, what a stateful defense is judged by (the metrics of
OARS, CCS 2023, and QPA, 2024; Goodfellow 2019): the attack's success ``r~``, the share of
its queries the defense flagged (abstentions), the query of its first detection (the
first abstention with a repeat or near-repeat reason) and in how many seeds it came,
its trajectory (exact duplicate share, cosine of successive steps), its cost (refused
queries per success, accounts used and burnt), the share of source inputs it fooled and
the perturbation that took (:mod:`movingtarget.metrics.fooled`), and beside it what
benign users paid: the false abstention on their fresh and on their near-duplicate
queries.
"""

from __future__ import annotations

import math
from typing import Any

from movingtarget.report.tables import fmt


def _values(group: list[dict[str, Any]], key: str) -> list[float]:
    out = []
    for run in group:
        v = run.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def _mean(group: list[dict[str, Any]], key: str) -> float:
    vals = _values(group, key)
    return sum(vals) / len(vals) if vals else float("nan")


def stateful_lines(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    """The Markdown section (empty when there are no runs).

    >>> runs = [{"attack": "a", "defense": "d", "first_detection": 3, "r_tilde": 0.5,
    ...          "abstain_adversarial": 0.1}, {"attack": "a", "defense": "d",
    ...          "first_detection": None, "r_tilde": 0.7, "abstain_adversarial": 0.0}]
    >>> rows = [{"attack": "a", "defense": "d", "r_tilde": 0.6, "r_tilde_se": 0.1}]
    >>> print(stateful_lines(rows, runs)[-1])
    | a | d | 0.6000 ± 0.1000 | — | — / — | 0.0500 | 3 (1 of 2) | — | — | — | — / — | — / — |
    """
    if not runs:
        return []
    lines = [
        "## Stateful defenses",
        "",
        "Per attack and defense, means over seeds: `r~` (± s.e.); *flagged*, the share of "
        "the attacker's queries the defense refused; *first detection*, the median query "
        "of the first refusal as a repeat or near repeat, and in how many seeds one came; "
        "*duplicates*, the share of its queries byte-identical to one it sent before, and "
        "*step cosine*, the mean cosine of successive query differences (query-based "
        "attacks probe along related directions); *refused per success* and *accounts* "
        "(used / burnt: refused at least once), what the attack cost; *inputs fooled*, the "
        "share of the source inputs it attacked that it fooled at least once within the "
        "budget (the OARS / QPA success rate), and *L2 / L∞*, the median over fooled "
        "inputs of the smallest perturbation that fooled them; *benign false abstention*, "
        "refusals of benign users' fresh (i.i.d.) queries and of their near-duplicate "
        "queries (— when the run sent none). The cumulative `r~` plot above is the "
        "attack's success against queries sent.",
        "",
        "| attack | defense | r~ | inputs fooled | L2 / L∞ | flagged | first detection (seeds) "
        "| duplicates | step cosine | refused per success | accounts used / burnt "
        "| benign false abstention (i.i.d. / near-duplicate) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        group = [r for r in runs if r["attack"] == row["attack"] and r["defense"] == row["defense"]]
        found = sorted(_values(group, "first_detection"))
        if found:
            mid = len(found) // 2
            median = found[mid] if len(found) % 2 else (found[mid - 1] + found[mid]) / 2
            first = f"{median:g} ({len(found)} of {len(group)})"
        else:
            first = f"never (0 of {len(group)})"
        r_tilde = fmt(row.get("r_tilde"), row.get("r_tilde_se"))
        lines.append(
            f"| {row['attack']} | {row['defense']} | {r_tilde} "
            f"| {fmt(_mean(group, 'inputs_fooled'))} "
            f"| {fmt(_mean(group, 'perturbation_l2'))} / {fmt(_mean(group, 'perturbation_linf'))} "
            f"| {fmt(_mean(group, 'abstain_adversarial'))} | "
            f"{first} | {fmt(_mean(group, 'duplicate_share'))} | "
            f"{fmt(_mean(group, 'step_cosine'))} | {fmt(_mean(group, 'bad_queries_per_success'))} "
            f"| {fmt(_mean(group, 'accounts_used'))} / {fmt(_mean(group, 'accounts_burnt'))} | "
            f"{fmt(_mean(group, 'abstain_benign_false'))} / "
            f"{fmt(_mean(group, 'abstain_benign_near'))} |"
        )
    return lines
