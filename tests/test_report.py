"""The report box: the Defenses section, the r~ plot (predictions beside measurements,
readable layout) and the trade-off plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox

from movingtarget.experiment import load_config, run_experiment
from movingtarget.experiment.runner import CURVE_POINTS, curve_points
from movingtarget.metrics.analytic import Prediction
from movingtarget.metrics.analytic import test_set_curve as expected_curve
from movingtarget.metrics.analytic import test_set_prediction as closed_form
from movingtarget.report import r_tilde_figure, write_report
from movingtarget.report.arms_race import tradeoff_figure

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


# --------------------------------------------------------------------------- curves


def test_curves_keep_every_query_of_the_search_for_the_first_mistake() -> None:
    pts = curve_points(10_000)
    assert pts[:100].tolist() == list(range(1, 101))  # every query up to 100
    assert pts[-1] == 10_000 and len(pts) <= CURVE_POINTS
    # beyond that, evenly spaced on the log axis: no long straight segments
    assert (pts[100:] / pts[99:-1]).max() <= 1.06
    assert curve_points(40).tolist() == list(range(1, 41))


def test_runs_and_summary_carry_the_curves(small_results: Path) -> None:
    runs = json.loads((small_results / "runs.json").read_text())
    rows = json.loads((small_results / "summary.json").read_text())
    assert all(run["curve_x"] == curve_points(300).tolist() for run in runs)
    by = {(r["attack"], r["defense"]): r for r in rows}
    # "=" and "<=": the prediction at every curve point, ending at the table's value
    det = by[("test-set", "deterministic")]
    assert det["prediction"] == "=" and det["curve_predicted_x"] == runs[0]["curve_x"]
    assert det["curve_predicted_y"][-1] == pytest.approx(det["r_tilde_predicted"], abs=1e-12)
    # memorization: the law of fresh mistakes, a curve that ends at the table's value
    mem = by[("test-set", "memorize-abstain")]
    assert mem["prediction"] == "="
    assert mem["curve_predicted_y"][-1] == pytest.approx(mem["r_tilde_predicted"], abs=1e-12)
    # "late" speaks of the second half, not of the cumulative curve: no curve stored
    late = by[("rate-tracking", "deterministic")]
    assert late["prediction"] == "late" and "curve_predicted_y" not in late


@pytest.mark.parametrize("r", [0.02, 0.005, 0.3])
def test_the_predicted_curve_is_the_expected_cumulative_r_tilde(r: float) -> None:
    # E[(t - T + 1)+] / t with T geometric, summed term by term
    for t in (1, 10, 50, 200, 1000):
        s = np.arange(1, t + 1)
        direct = float((r * (1 - r) ** (s - 1) * (t - s + 1)).sum() / t)
        assert expected_curve(r, np.array([t]))[0] == pytest.approx(direct, rel=1e-9)
    # at m it is the table's closed form
    assert expected_curve(r, np.array([10_000]))[0] == pytest.approx(
        closed_form(r, 10_000), abs=1e-6
    )


# --------------------------------------------------------------------------- plots


def _fake(attacks: list[str], defenses: list[str], kinds: dict[str, str], m: int = 1500):
    """Runs and summary rows shaped like an experiment's, with made-up curves."""
    x = curve_points(m)
    runs, rows = [], []
    for a in attacks:
        for j, d in enumerate(defenses):
            y = np.minimum(1.0, np.log1p(x) / np.log1p(m) * (0.3 + 0.1 * j))
            runs.append({"attack": a, "defense": d, "seed": 0, "curve_x": x.tolist(),
                         "curve_y": y.tolist()})  # fmt: skip
            row = {"attack": a, "defense": d, "prediction": kinds[d], "r_tilde_predicted": 0.05}
            if kinds[d] in ("=", "<="):
                pred = Prediction(0.99, "=", rate=0.02) if kinds[d] == "=" else Prediction(
                    0.05, "<="
                )  # fmt: skip
                row["r_tilde_predicted"] = pred.value
                row["curve_predicted_x"] = x.tolist()
                row["curve_predicted_y"] = pred.curve(x).tolist()  # type: ignore[union-attr]
            rows.append(row)
    return runs, rows


ARMS_RACE_KINDS = {
    "memorize-abstain": "=",
    "robust": "<=",
    "neighbours": "<=",
    "robust-narrow": "<=",
    "robust-wide": "<=",
    "neighbours-wide": "<=",
}
TWELVE = [f"{n}(eps={e})" for n in ("linf", "l2", "transform") for e in (1, 2, 4, 8)]


def _lines(fig: Figure, prefix: str) -> dict[str, Line2D]:
    return {
        str(line.get_gid()): line
        for ax in fig.axes
        for line in ax.lines
        if str(line.get_gid()).startswith(prefix)
    }


def test_each_measured_curve_has_its_prediction_beside_it(small_results: Path) -> None:
    runs = json.loads((small_results / "runs.json").read_text())
    rows = json.loads((small_results / "summary.json").read_text())
    fig = r_tilde_figure(runs, rows)
    measured, predicted = _lines(fig, "measured:"), _lines(fig, "predicted:")
    for row in rows:
        key = f"{row['attack']}:{row['defense']}"
        assert f"measured:{key}" in measured
        if row["prediction"] in ("=", "<=", "late", "repeats"):
            line = predicted[f"predicted:{key}"]
            # in the measured curve's colour, drawn in another style
            assert line.get_color() == measured[f"measured:{key}"].get_color()
            assert line.get_linestyle() != "-" or line.get_linewidth() > 3
        else:
            assert f"predicted:{key}" not in predicted
    assert len(predicted) == sum(r["prediction"] != "" for r in rows)


def test_coinciding_lines_stay_distinguishable() -> None:
    runs, rows = _fake(TWELVE, list(ARMS_RACE_KINDS), ARMS_RACE_KINDS)
    fig = r_tilde_figure(runs, rows)
    measured = [line for line in _lines(fig, "measured:").values() if TWELVE[0] in line.get_gid()]
    assert len({line.get_marker() for line in measured}) == len(ARMS_RACE_KINDS)
    # five equal bounds in one panel: their dashes take turns, so every colour shows
    bounds = [
        line
        for key, line in _lines(fig, "predicted:").items()
        if key.startswith(f"predicted:{TWELVE[0]}:") and "memorize" not in key
    ]
    assert len(bounds) == 5
    assert len({line._unscaled_dash_pattern for line in bounds}) == 5  # type: ignore[attr-defined]


def _overlaps(a: Bbox, b: Bbox) -> bool:
    return a.overlaps(b) and a.intersection(a, b) is not None and min(a.width, b.width) > 0


def _assert_readable(fig: Figure) -> None:
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # the layout engine places everything at draw time
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    panels = [ax for ax in fig.axes if ax.axison]
    for ax in panels:
        assert not _overlaps(box, ax.get_window_extent(renderer)), ax.get_title()
        assert not _overlaps(box, ax.title.get_window_extent(renderer)), ax.get_title()
    title = fig._suptitle  # type: ignore[attr-defined]
    if title is not None:
        extent = title.get_window_extent(renderer)
        assert not _overlaps(extent, box)
        for ax in panels:
            assert not _overlaps(extent, ax.get_window_extent(renderer))
            assert not _overlaps(extent, ax.title.get_window_extent(renderer))


@pytest.mark.parametrize(
    ("attacks", "defenses"),
    [
        (["test-set"], ["deterministic", "memorize-abstain"]),
        (
            ["test-set", "test-set-targeted", "rate-tracking", "noisy-repeat"],
            list(ARMS_RACE_KINDS)[:5],
        ),
        (TWELVE, list(ARMS_RACE_KINDS)),
    ],
)
def test_legend_and_titles_keep_clear_of_the_panels(
    attacks: list[str], defenses: list[str]
) -> None:
    kinds = {d: ARMS_RACE_KINDS.get(d, "=") for d in defenses}
    runs, rows = _fake(attacks, defenses, kinds)
    _assert_readable(r_tilde_figure(runs, rows, title="arms-race: digits, logistic"))


def test_tradeoff_legend_keeps_clear_of_the_panels() -> None:
    rows = [
        {"attack": a, "defense": d, "r": 0.05, "r_tilde": 0.02 + 0.1 * j,
         "abstain_benign_false": 0.1 * j}
        for a in TWELVE
        for j, d in enumerate(ARMS_RACE_KINDS)
    ]  # fmt: skip
    _assert_readable(tradeoff_figure(rows, title="arms-race"))


def test_stateful_defense_table(tmp_path: Path) -> None:
    """The report's stateful-defense table on digits: the adaptive attacker and a
    bridged Square against calibrated near-repeat memory; every row's figures are the
    runs' own (first detection the median over seeds of each run's first refusal as a
    near repeat; accounts as the runs count them)."""
    import json
    import re

    out = tmp_path / "stateful"
    cfg = load_config(
        "hello-world",
        [
            "seeds=2",
            "arena.queries=150",
            "arena.benign_ratio=0.2",
            'defenses=["near-repeat-abstain"]',
            'attacks=[{name = "adaptive", accounts = 3}, {name = "square"}]',
        ],
    )
    run_experiment(cfg, out, workers=1)
    text = write_report(out).read_text()
    assert "## Stateful defenses" in text
    runs = json.loads((out / "runs.json").read_text())
    for attack in ("adaptive", "square"):
        section = text.split("## Stateful defenses", 1)[1].splitlines()
        line = next(x for x in section if x.startswith(f"| {attack} | near-repeat"))
        group = [r for r in runs if r["attack"] == attack]
        found = sorted(r["first_detection"] for r in group if r["first_detection"] is not None)
        assert f"({len(found)} of {len(group)})" in line, line
        if attack == "square":
            assert found, "the near-repeat memory detects Square within 150 queries"
        used = np.mean([r["accounts_used"] for r in group])
        assert re.search(rf"\| {used:.4f} / ", line), line
        # the per-input columns are the runs' own: inputs fooled, then L2 / L-inf
        fooled = np.mean([r["inputs_fooled"] for r in group])
        l2 = np.mean([r["perturbation_l2"] for r in group])
        assert f"| {fooled:.4f} | {l2:.4f} / " in line, line
        if attack == "square":
            assert l2 > 0  # Square's examples are perturbed copies; the adaptive's are not
