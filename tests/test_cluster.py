"""``movingtarget run --cluster``: real processes only. A real ``dask scheduler`` and two
``dask worker`` processes on loopback, ``LocalCluster`` sweeps killed mid-way and resumed,
and the one-line errors of bad ``--cluster`` values."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_process import run_cli

distributed = pytest.importorskip("distributed", reason="the cluster extra is not installed")

BIN = Path(sys.executable).parent
DEPLOYMENTS = 8  # 2 attacks x 2 defenses x 2 seeds

TINY = """
name = "tiny"
seeds = 2
test_size = 0.5
defenses = ["deterministic", "memorize-abstain"]

[dataset]
name = "digits"

[model]
name = "logistic"

[arena]
queries = 200

[[attacks]]
name = "test-set"

[[attacks]]
name = "{second}"
{params}
"""

# A test set attack behind a gate (a file): closed, it raises ("fail") or waits ("wait");
# open, it is the test set attack. Imported by the client and by every worker.
GATE = '''
import os
import time

from movingtarget.attacks import TestSetAttack


class Gate(TestSetAttack):
    def __init__(self, *args, mode="fail", **kwargs):
        super().__init__(*args, **kwargs)
        self.mode = mode

    def propose(self, limit, exactly=False):
        while not os.path.exists(os.environ["MT_GATE"]):
            if self.mode == "fail":
                raise RuntimeError("the gate is closed")
            time.sleep(0.05)
        return super().propose(limit, exactly)


def holds_a_sweep():
    """Whether this worker process ran deployments (it keeps the sweep's models)."""
    from movingtarget.experiment import runner

    return runner._STATE.get("prepared") is not None
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the configs, the gate plugin and a model cache."""
    root = tmp_path_factory.mktemp("cluster")
    (root / "gate_attack.py").write_text(GATE)
    (root / "tiny.toml").write_text(TINY.format(second="noisy-repeat", params="eps = 0.03"))
    for mode in ("fail", "wait"):
        gated = TINY.format(second="gate_attack:Gate", params=f'mode = "{mode}"')
        (root / f"gate-{mode}.toml").write_text(gated)
    return root


def env_for(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(home),
        "MOVINGTARGET_CACHE": str(home / ".mt-cache"),
        "MT_GATE": str(home / "gate-open"),
        "COLUMNS": "400",
    }


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=home, env=env_for(home), timeout=300)


@pytest.fixture(scope="module")
def scheduler(home: Path) -> Iterator[str]:
    """A real ``dask scheduler`` with two ``dask worker`` processes on loopback (fails,
    not skips, when they cannot start)."""
    address = f"tcp://127.0.0.1:{free_port()}"
    logs = home / "dask-logs"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        with (logs / f"{name}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [str(BIN / "dask"), *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=home,
                    env=env_for(home),
                )
            )

    port = address.rsplit(":", 1)[1]
    start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard")
    for i in range(2):
        start(
            f"worker{i}",
            "worker",
            address,
            "--nworkers",
            "1",
            "--nthreads",
            "1",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
        )
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
    except Exception as exc:
        for p in procs:
            p.kill()
        text = "\n".join(f.read_text(errors="replace")[-2000:] for f in sorted(logs.iterdir()))
        pytest.fail(f"the dask scheduler and two workers did not start ({exc}):\n{text}")
    yield address
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def records(out: Path) -> dict[str, int]:
    """Finished deployment records under ``out/tasks``: name -> modification time (ns)."""
    return {
        p.name: p.stat().st_mtime_ns
        for p in (out / "tasks").glob("*.json")
        if p.name != "sweep.json"
    }


def test_a_real_scheduler_with_two_workers_gives_the_local_summary_byte_for_byte(
    home: Path, scheduler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = cli(home, "run", "tiny.toml", "--out", "local", "--workers", "1")
    assert local.returncode == 0, local.stderr
    dask = cli(home, "run", "tiny.toml", "--out", "dask", "--cluster", scheduler)
    assert dask.returncode == 0, dask.stderr
    assert (home / "dask" / "summary.json").read_bytes() == (
        home / "local" / "summary.json"
    ).read_bytes()
    assert (home / "dask" / "runs.json").read_bytes() == (home / "local" / "runs.json").read_bytes()
    # the event logs were gathered into the client's results folder, the same ones
    logs = sorted(p.name for p in (home / "local" / "logs").iterdir())
    assert len(logs) == DEPLOYMENTS
    for name in logs:
        assert (home / "dask" / "logs" / name).read_bytes() == (
            home / "local" / "logs" / name
        ).read_bytes()
    assert len(records(home / "dask")) == DEPLOYMENTS
    # both worker processes ran deployments (each holds the sweep's scattered models)
    monkeypatch.syspath_prepend(str(home))  # the plugin module the workers import too
    from gate_attack import holds_a_sweep  # type: ignore[import-not-found]

    with distributed.Client(scheduler, timeout=30) as client:
        held = client.run(holds_a_sweep)
    assert sorted(held.values()) == [True, True], held


def test_a_failed_deployment_is_named_and_resume_runs_only_the_rest(
    home: Path, scheduler: str
) -> None:
    out = home / "failing"
    p = cli(home, "run", "gate-fail.toml", "--out", str(out), "--cluster", scheduler)
    assert p.returncode == 2, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert errors[0].startswith("error: 4 of 8 deployments failed: gate_attack:Gate x ")
    assert "RuntimeError: the gate is closed" in errors[0]
    assert "seed 0" in errors[0] and "seed 1" in errors[0]
    assert "--resume" in errors[0]
    kept = records(out)
    assert sorted(kept) == sorted(
        f"test-set__{d}__seed{s}.json"
        for d in ("deterministic", "memorize-abstain")
        for s in (0, 1)
    )
    assert not (out / "summary.json").exists()

    (home / "gate-open").touch()
    try:
        again = cli(
            home, "run", "gate-fail.toml", "--out", str(out), "--cluster", scheduler, "--resume"
        )
        fresh = cli(home, "run", "gate-fail.toml", "--out", "gate-fresh", "--workers", "1")
    finally:
        (home / "gate-open").unlink()
    assert again.returncode == 0, again.stderr
    assert "tiny: resumed: 4 of 8 deployments already finished" in again.stderr
    assert "running 4" in again.stderr
    after = records(out)
    assert len(after) == DEPLOYMENTS
    # the four finished deployments were not run again: their records are untouched
    assert {k: after[k] for k in kept} == kept
    assert fresh.returncode == 0, fresh.stderr
    assert (out / "summary.json").read_bytes() == (home / "gate-fresh/summary.json").read_bytes()


def test_a_local_cluster_sweep_killed_mid_way_resumes_without_repeating(home: Path) -> None:
    out = home / "killed"
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "movingtarget",
            "run",
            "gate-wait.toml",
            "--out",
            str(out),
            "--cluster",
            "local:2",
        ],
        cwd=home,
        env=env_for(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its LocalCluster's workers die with it
    )
    try:
        # the gated deployments wait for the gate: the sweep cannot finish on its own
        deadline = time.monotonic() + 120
        while not records(out) and time.monotonic() < deadline and sweep.poll() is None:
            time.sleep(0.1)
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=30)
    kept = records(out)
    assert 1 <= len(kept) <= 4, kept  # only test-set deployments can have finished
    assert all(name.startswith("test-set__") for name in kept)

    (home / "gate-open").touch()
    try:
        again = cli(
            home, "run", "gate-wait.toml", "--out", str(out), "--cluster", "local:2", "--resume"
        )
        fresh = cli(home, "run", "gate-wait.toml", "--out", "wait-fresh", "--workers", "1")
    finally:
        (home / "gate-open").unlink()
    assert again.returncode == 0, again.stderr
    n = len(kept)
    assert f"resumed: {n} of 8 deployments already finished" in again.stderr
    assert f"running {8 - n}" in again.stderr
    after = records(out)
    assert len(after) == DEPLOYMENTS
    assert {k: after[k] for k in kept} == kept
    assert fresh.returncode == 0, fresh.stderr
    assert (out / "summary.json").read_bytes() == (home / "wait-fresh/summary.json").read_bytes()


def test_resume_refuses_records_of_another_config(home: Path) -> None:
    out = home / "other"
    assert cli(home, "run", "tiny.toml", "--out", str(out), "--workers", "1").returncode == 0
    p = cli(home, "run", "tiny.toml", "--out", str(out), "--queries", "150", "--resume")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"error: --resume: {out / 'tasks'} holds deployments of another config (or another "
        "queries, defense, attack or arena setting); run without --resume to start over"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", "10.0.0.1:8786"], "--cluster '10.0.0.1:8786': write tcp://HOST:PORT"),
        (["--cluster", "local:0"], "--cluster 'local:0': a local cluster needs at least one"),
        (["--cluster", "local:two"], "--cluster 'local:two': write tcp://HOST:PORT"),
        (["--cluster", "http://h:1"], "--cluster 'http://h:1': write tcp://HOST:PORT"),
        (["--cluster", "local:2", "--workers", "2"], "--workers sizes the local process pool"),
        (["--cluster", "tcp://127.0.0.1:{port}"], "no Dask scheduler answered within 5 s"),
    ],
)
def test_bad_cluster_values_give_one_line(home: Path, args: list[str], message: str) -> None:
    args = [a.format(port=free_port()) for a in args]
    p = cli(home, "run", "tiny.toml", "--out", "bad", *args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


def test_without_the_cluster_extra_cluster_names_it(home: Path, tmp_path: Path) -> None:
    # a `distributed` that cannot be imported, as on an install without the extra
    fake = tmp_path / "distributed"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        textwrap.dedent(
            """
            raise ModuleNotFoundError("No module named 'distributed'", name="distributed")
            """
        )
    )
    env = {**env_for(home), "PYTHONPATH": f"{tmp_path}{os.pathsep}{home}"}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "movingtarget",
            "run",
            "tiny.toml",
            "--out",
            "none",
            "--cluster",
            "local:2",
        ],
        capture_output=True,
        text=True,
        cwd=home,
        env=env,
        timeout=120,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "error: --cluster needs 'distributed', which is not installed: "
        "pip install 'movingtarget[cluster]'"
    ]


def test_records_are_json_that_aggregates_like_the_results(tmp_path: Path) -> None:
    from movingtarget.experiment import load_config, run_experiment

    config_path = tmp_path / "tiny.toml"
    config_path.write_text(TINY.format(second="noisy-repeat", params="eps = 0.03"))
    config = load_config(str(config_path), ["seeds=1"])
    results = run_experiment(config, tmp_path / "out", workers=1)
    recorded = sorted((tmp_path / "out" / "tasks").glob("*__seed0.json"))
    assert len(recorded) == 4
    runs = {(r["attack"], r["defense"]): r for r in results.runs}
    for path in recorded:
        data = json.loads(path.read_text())
        assert runs[(data["attack"], data["defense"])]["r_tilde"] == data["r_tilde"]


def test_resume_without_a_cluster_runs_only_the_missing_deployments(home: Path) -> None:
    out = home / "pool"
    assert cli(home, "run", "tiny.toml", "--out", str(out), "--workers", "1").returncode == 0
    whole = (out / "summary.json").read_bytes()
    before = records(out)
    gone = ["test-set__deterministic__seed1.json", "noisy-repeat__memorize-abstain__seed0.json"]
    for name in gone:
        (out / "tasks" / name).unlink()
    (out / "summary.json").unlink()
    p = cli(home, "run", "tiny.toml", "--out", str(out), "--workers", "2", "--resume")
    assert p.returncode == 0, p.stderr
    assert "tiny: resumed: 6 of 8 deployments already finished" in p.stderr
    assert "running 2" in p.stderr
    after = records(out)
    assert {k: v for k, v in after.items() if k not in gone} == {
        k: v for k, v in before.items() if k not in gone
    }
    assert set(after) == set(before)
    assert (out / "summary.json").read_bytes() == whole
