"""The command line, run as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SPAMBASE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "spambase.csv"
SUMMARY_KEYS = {
    "attack",
    "defense",
    "seeds",
    "queries",
    "r",
    "r_tilde",
    "r_tilde_predicted",
    "abstain_adversarial",
    "abstain_benign",
    "benign_accuracy",
}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOVINGTARGET_CACHE": str(Path(cwd or ".") / ".mt-cache")}
    return subprocess.run(
        [sys.executable, "-m", "movingtarget", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def test_small_run_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "res"
    p = cli("run", "--out", str(out), "--seeds", "2", "--queries", "400", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = json.loads((out / "summary.json").read_text())
    assert len(rows) == 4 * 5
    for row in rows:
        assert row.keys() >= SUMMARY_KEYS
        assert row["seeds"] == 2 and row["queries"] == 400
    assert (out / "report.md").read_text().count("\n|") >= 21
    png = (out / "r_tilde.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "logs").glob("*.csv"))) == 4 * 5 * 2
    assert "memorize-abstain" in p.stdout
    # report re-renders from the folder alone
    (out / "report.md").unlink()
    assert cli("report", str(out), cwd=tmp_path).returncode == 0
    assert (out / "report.md").exists()


@pytest.mark.slow
def test_default_run_reproduces_the_hello_world_table(tmp_path: Path) -> None:
    p = cli("run", "--out", str(tmp_path / "hw"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "hw" / "summary.json").read_text())
    by = {(r["attack"], r["defense"]): r for r in rows}
    assert len(rows) == 20
    det = by[("test-set", "deterministic")]
    assert det["seeds"] == 5 and det["queries"] == 10_000
    # the measured value sits beside its prediction: within 3 standard errors, or within
    # the closed form's own approximation of T by its mean when all seeds agree
    se = det["r_tilde_se"] or 0.0
    assert abs(det["r_tilde"] - det["r_tilde_predicted"]) <= max(3 * se, 0.005)
    mem = by[("test-set", "memorize-abstain")]
    assert mem["r_tilde"] <= det["r"] + 3 * (mem["r_tilde_se"] or 0.0)
    assert by[("noisy-repeat", "memorize-abstain")]["r_tilde"] > 0.9  # noise evades exact memory


def test_spambase_config(tmp_path: Path) -> None:
    assert SPAMBASE.exists(), f"{SPAMBASE} is missing: the tests need ../shared beside the repo"
    out = tmp_path / "spam"
    p = cli(
        "run",
        "spambase",
        "--out",
        str(out),
        "--seeds",
        "2",
        "--queries",
        "300",
        "--set",
        f"dataset.path={SPAMBASE}",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    rows = json.loads((out / "summary.json").read_text())
    assert {r["attack"] for r in rows} == {"spam-gets-through"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nothere.toml"], "config nothere.toml does not exist"),
        (["run", "--set", 'defenses=["deterministc"]'], "unknown mechanism 'deterministc'"),
        (["run", "--set", 'attacks=["fgsm-lol"]'], "unknown attack 'fgsm-lol'"),
        (["run", "--set", "arena.querys=5"], "unknown field arena.'querys'"),
        (["run", "--set", "dataset.name=digitz"], "unknown dataset 'digitz'"),
        (["run", "spambase", "--set", "dataset.path=/no/such.csv"], "/no/such.csv"),
        (["run", "--seeds", "0"], "Invalid value for '--seeds'"),
        (["run", "--bogus"], "No such option: --bogus"),
        (["report", "/no/results"], "does not exist"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    p = (
        cli(*args, "--out", str(tmp_path / "o"), cwd=tmp_path)
        if args[0] == "run"
        else cli(*args, cwd=tmp_path)
    )
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    assert message in p.stderr


def test_malformed_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[arena\nqueries = 3")
    p = cli("run", str(bad), cwd=tmp_path)
    assert p.returncode == 2
    assert "is not valid TOML" in p.stderr and "Traceback" not in p.stderr


def test_list_shows_every_box(tmp_path: Path) -> None:
    p = cli("list", cwd=tmp_path)
    assert p.returncode == 0
    for name in ("digits", "logistic", "memorize", "memorize-abstain", "rate-tracking"):
        assert name in p.stdout


OPTIONAL = ("torch", "faiss", "redis", "fastapi", "uvicorn", "art", "httpx", "prometheus_client")


def test_core_run_needs_no_optional_dependency(tmp_path: Path) -> None:
    # the core install (no extras) must run the main job: hide every optional package
    code = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {OPTIONAL!r}:\n"
        "            raise ImportError(name + ' is not installed')\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from movingtarget.cli.main import main\n"
        "sys.argv = ['movingtarget', 'run', '--seeds', '1', '--queries', '300', '--workers', '1',"
        f" '--out', {str(tmp_path / 'out')!r}]\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "MOVINGTARGET_CACHE": str(tmp_path / "cache")},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "summary.json").exists()
