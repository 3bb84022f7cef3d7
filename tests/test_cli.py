"""The command line, run as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_process import run_cli

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
    return run_cli(*args, cwd=cwd)


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
    assert det["seeds"] == 20 and det["queries"] == 400
    # the measured value sits beside the prediction for the attacker that ran, within
    # three of the law's own standard errors (no floor)
    assert det["se_used"] == "analytic"
    se = det["r_tilde_predicted_se"]
    assert abs(det["r_tilde"] - det["r_tilde_predicted"]) <= 3 * se
    assert det["verdict"] == "agrees"
    mem = by[("test-set", "memorize-abstain")]
    r = mem["rate"]
    assert abs(mem["r_tilde"] - r / (1 + r)) <= 3 * mem["r_tilde_predicted_se"]
    assert by[("noisy-repeat", "memorize-abstain")]["r_tilde"] > 0.9  # noise evades exact memory
    # then the thesis: the dynamic defense holds every attacker below every fixed defense,
    # the screening attacker (which breaks exact memorization) included, beyond 3 s.e.
    thesis = json.loads((tmp_path / "hw" / "thesis" / "summary.json").read_text())
    cell = {(r["attack"], r["defense"]): r for r in thesis}
    assert cell[("screening", "memorize-abstain")]["r_tilde"] > 0.9
    for attack in {r["attack"] for r in thesis}:
        ours = cell[(attack, "dynamic")]
        for fixed in ("deterministic", "memorize-abstain", "near-repeat-abstain"):
            theirs = cell[(attack, fixed)]
            se = math.hypot(ours["r_tilde_se"], theirs["r_tilde_se"], 1 / (400 * 5))
            assert ours["r_tilde"] < theirs["r_tilde"] - 3 * se, (attack, fixed)
    report = (tmp_path / "hw" / "report.md").read_text()
    assert "## Then: thesis" in report and "(thesis/r_tilde.png)" in report
    assert "then thesis: digits" in p.stdout


def test_spambase_config(tmp_path: Path) -> None:
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
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    rows = json.loads((out / "summary.json").read_text())
    assert {r["attack"] for r in rows} == {"spam-gets-through"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nothere.toml"], "config nothere.toml does not exist"),
        (
            ["run", "--set", 'defenses=["memorise-abstain"]'],
            "unknown defense 'memorise-abstain' (did you mean 'memorize-abstain'?); defenses: "
            "deterministic, stochastic,",
        ),
        (["run", "--set", 'defenses=["deterministc"]'], "(did you mean 'deterministic'?)"),
        (
            ["run", "--set", 'defenses=["memorize > argmx"]'],
            "unknown mechanism 'argmx' (did you mean 'argmax'?)",
        ),
        (["run", "--set", 'attacks=["fgsm-lol"]'], "unknown attack 'fgsm-lol'"),
        (["run", "--set", "arena.querys=5"], "unknown field arena.'querys'"),
        (["run", "--set", "dataset.name=digitz"], "unknown dataset 'digitz'"),
        (
            ["run", "spambase", "--set", "dataset.path=/no/such.csv"],
            "/no/such.csv: CSV file not found (set by the dataset's 'path': dataset.path in a "
            "config, --set dataset.path=PATH on the command line)",
        ),
        (["run", "--seeds", "0"], "Invalid value for '--seeds'"),
        (["run", "--set", 'then=["thesys"]'], "then[0]: config 'thesys' does not exist"),
        (["run", "--set", "then=3"], "then must be a list"),
        (["run", "--bogus"], "No such option: --bogus"),
        (
            # Square's first tiles on Spambase's 57 features (a 3x19 view) at p_init 0.8
            [
                "run",
                "dynamic-spambase",
                "--seeds",
                "1",
                "--queries",
                "20",
                "--set",
                'defenses=["deterministic"]',
                "--set",
                'attacks=[{name = "square"}]',
            ],
            "square: inputs of shape (57,) are seen as a 3x19 image, too narrow for its first "
            "tiles (side 7 from p_init=0.8); set p_init to at most 0.109",
        ),
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


OPTIONAL = (
    "torch", "faiss", "redis", "fastapi", "uvicorn", "art", "httpx", "prometheus_client",
    "onnxruntime", "onnx", "skops", "skl2onnx",
)  # fmt: skip


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


@pytest.mark.parametrize("where", ["/proc/x", "afile/sub"])
def test_unusable_results_folder_is_refused_before_any_work(tmp_path: Path, where: str) -> None:
    (tmp_path / "afile").write_text("not a folder")
    p = cli("run", "--out", where, cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    reason = "afile is a file, not a folder" if where == "afile/sub" else "cannot write results"
    assert p.stderr.startswith(f"error: --out {where}: {reason}"), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".mt-cache").exists()  # refused before the model was trained


def hide(*modules: str) -> str:
    """Code that makes ``modules`` missing, as they are when their extra is not installed."""
    return (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {modules!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from movingtarget.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )


NEIGHBOURS = 'defenses=["near-repeat(on_repeat=abstain, fingerprint=neighbours) > argmax"]'


@pytest.mark.parametrize(
    ("module", "extra", "args"),
    [
        ("fastapi", "serve", ["serve", "--port", "0"]),
        ("uvicorn", "serve", ["serve", "--port", "0"]),
        ("fastapi", "serve", ["keys", "create", "alice", "--keys-db", "sqlite:///k.db"]),
        ("fastapi", "serve", ["keys", "list", "--keys-db", "sqlite:///k.db"]),
        ("httpx", "serve", ["attack", "http://127.0.0.1:9", "--key", "k", "--out", "a"]),
        ("fastapi", "serve", ["audit", "audit.jsonl", "--keys-db", "sqlite:///k.db"]),
        ("redis", "memory", ["keys", "list", "--keys-db", "redis://127.0.0.1:9/0"]),
        ("skl2onnx", "models", ["export", "digits:logistic", "-o", "m.onnx"]),
        (
            "faiss",
            "memory",
            ["run", "--queries", "20", "--workers", "1", "--out", "o", "--set", NEIGHBOURS],
        ),
    ],
)
def test_missing_optional_dependency_names_its_extra(
    tmp_path: Path, module: str, extra: str, args: list[str]
) -> None:
    (tmp_path / "audit.jsonl").write_text("")
    proc = subprocess.run(
        [sys.executable, "-c", hide(module), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MOVINGTARGET_CACHE": str(tmp_path / "cache")},
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"needs {module!r}, which is not installed" in line
    assert line.endswith(f"pip install 'movingtarget[{extra}]'"), line
    assert not (tmp_path / "k.db").exists()  # nothing written on the way to the error


COMMANDS = [
    ["run"], ["list"], ["report"], ["serve"], ["audit"], ["attack"], ["export"],
    ["keys", "create"], ["keys", "list"], ["keys", "revoke"],
]  # fmt: skip


def flags(command: list[str]) -> set[str]:
    """The options of ``command`` that take no value (from the command itself)."""
    import typer

    from movingtarget.cli.main import app

    node = typer.main.get_command(app)
    for name in command:
        node = node.commands[name]  # type: ignore[attr-defined]
    return {"--help"} | {o for p in node.params if getattr(p, "is_flag", False) for o in p.opts}


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_reads_like_a_plain_command_line(
    tmp_path: Path, command: list[str], columns: int
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "movingtarget", *command, "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": str(columns)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith(f"Usage: movingtarget {' '.join(command)} [OPTIONS]")
    assert "<" not in text.replace("<=", "")  # no <str>, <int range>, <bool> placeholders
    assert not set("╭│╰─") & set(text)  # no box around the options
    assert max(len(line) for line in text.splitlines()) <= columns
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "--help":
            assert words[1] == "Show"  # a flag takes no value: no metavar after it
        flag = len(words) > 1 and (words[0] in flags(command) or words[1] == "/")
        if words and words[0].startswith("--") and not flag:  # --labels / --no-labels: a flag
            assert words[1].replace("=", "").replace(":", "").isupper(), line  # --out PATH
