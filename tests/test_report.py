"""The report box: the Defenses section, the r~ plot (predictions beside measurements,
readable layout) and the trade-off plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from movingtarget.experiment import load_config, run_experiment
from movingtarget.report import write_report

SMALL = [
    "seeds=1",
    "arena.queries=300",
    "arena.benign_ratio=0.1",
    'attacks=["test-set", "rate-tracking"]',
    'defenses=["deterministic", "memorize-abstain", '
    '{name = "sure", mechanisms = "argmax > threshold(min_confidence=0.6)"}]',
]


@pytest.fixture(scope="module")
def small_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    run_experiment(load_config("synthetic", SMALL), out, workers=1)
    write_report(out)
    return out


def test_report_lists_every_defense_with_its_composition(small_results: Path) -> None:
    meta = json.loads((small_results / "experiment.json").read_text())
    assert meta["compositions"] == {
        "deterministic": "argmax",
        "memorize-abstain": "memorize(on_repeat=abstain) > argmax",
        "sure": "argmax > threshold(min_confidence=0.6)",
    }
    report = (small_results / "report.md").read_text()
    assert "## Defenses" in report
    section = report.split("## Defenses", 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert lines[:3] == [
        "| deterministic | `argmax` |",
        "| memorize-abstain | `memorize(on_repeat=abstain) > argmax` |",
        "| sure | `argmax > threshold(min_confidence=0.6)` |",
    ]
    # `movingtarget report DIR` renders the same section from the folder alone
    (small_results / "report.md").unlink()
    assert (
        "| sure | `argmax > threshold(min_confidence=0.6)` |"
        in write_report(small_results).read_text()
    )
