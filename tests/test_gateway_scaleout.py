"""The gateway across restarts and replicas, and attacked over HTTP: memory and limits
survive a restart (SQLite); two replicas behind one Redis catch an attacker who
alternates between them and share its limits; the remote test set attack gets the
same event log and ``r~`` as a local run of the same seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gateway_server import GatewayServer, classify, digits_x, gateway_env, new_key
from movingtarget.arena import Arena, ArenaConfig, DeploymentSeeds
from movingtarget.arena.eventlog import EventLog
from movingtarget.attacks import build_adversary
from movingtarget.cli.main import main
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense
from movingtarget.experiment.runner import make_pools
from movingtarget.gateway.process import running
from movingtarget.gateway.server.serving import load_served_model
from movingtarget.memory.stores._redis_launcher import RedisServer
from movingtarget.metrics.measured import attack_metrics

__all__ = ["digits_x", "gateway_env"]  # fixtures


def test_restart_keeps_memory_and_limits(tmp_path: Path, gateway_env, digits_x):
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    store = f"sqlite:///{tmp_path / 'memory.db'}"
    token = new_key(keys, "persistent", rate=0.001, burst=3)
    args = ("--keys-db", keys, "--store", store)
    with GatewayServer(*args, env=gateway_env, log=tmp_path / "a.log") as server:
        first = classify(server.url, token, digits_x[:1]).json()["answers"][0]
        assert first["reason"] == "model"
        assert classify(server.url, token, digits_x[1:2]).status_code == 200
    with GatewayServer(*args, env=gateway_env, log=tmp_path / "b.log") as server:
        again = classify(server.url, token, digits_x[:1]).json()["answers"][0]
        assert again["abstained"] and again["reason"] == "repeat"
        # the bucket survived too: 3 queries spent before and after the restart
        assert classify(server.url, token, digits_x[2:3]).status_code == 429


def test_two_replicas_with_one_redis_catch_an_alternating_attacker(
    tmp_path: Path, gateway_env, digits_x, redis_server: RedisServer
):
    url = redis_server.url
    ns = "replicas"
    token = new_key_redis(url, ns, "alternating", rate=0)
    limited = new_key_redis(url, ns, "limited", rate=0.001, burst=3)
    args = ("--keys-db", url, "--store", url, "--namespace", ns)
    a = GatewayServer(*args, "--replica", "a", env=gateway_env, log=tmp_path / "a.log")
    b = GatewayServer(*args, "--replica", "b", env=gateway_env, log=tmp_path / "b.log")
    with running(a, b):  # two processes, started side by side
        reasons = []
        for i, server in enumerate([a, b, a, b]):
            x = digits_x[[700 + i // 2]]  # each input sent once to a, then to b
            reasons.append(classify(server.url, token, x).json()["answers"][0]["reason"])
        assert reasons == ["model", "repeat", "model", "repeat"]
        # one bucket for both replicas: 3 queries, then 429 wherever the fourth goes
        codes = [
            classify(s.url, limited, digits_x[[800 + i]]).status_code
            for i, s in enumerate([a, b, a, b])
        ]
        assert codes == [200, 200, 200, 429]


def new_key_redis(url: str, ns: str, name: str, **limits: float) -> str:
    from movingtarget.gateway.access.base import KeyLimits
    from movingtarget.gateway.access.keys import open_keys

    store = open_keys(url, namespace=ns)
    try:
        return store.create(name, KeyLimits(**limits).check())[1]  # type: ignore[arg-type]
    finally:
        store.close()


def test_remote_test_set_attack_matches_a_local_run(tmp_path: Path, gateway_env, monkeypatch):
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    attacker = new_key(keys, "attacker", rate=0)
    benign = new_key(keys, "benign", rate=0)
    audit = tmp_path / "audit.jsonl"
    budget, seed, ratio = 300, 3, 0.1
    out = tmp_path / "remote"
    args = ("--keys-db", keys, "--audit", str(audit))
    with GatewayServer(*args, env=gateway_env, log=tmp_path / "serve.log") as server:
        code = main(
            [
                "attack",
                server.url,
                "--key",
                attacker,
                "--benign-key",
                benign,
                "--benign-ratio",
                str(ratio),
                "--attack",
                "test-set",
                "--dataset",
                "digits",
                "--budget",
                str(budget),
                "--seed",
                str(seed),
                "--out",
                str(out),
            ]
        )
    assert code == 0
    for name in ("summary.json", "runs.json", "experiment.json", "report.md", "queries.csv"):
        assert (out / name).exists(), name
    (log_file,) = (out / "logs").glob("*.csv")
    remote = EventLog.read(log_file)

    # the same deployment, locally: the same model, pools, adversary, arena and seed
    monkeypatch.setenv("MOVINGTARGET_CACHE", gateway_env["MOVINGTARGET_CACHE"])
    served = load_served_model("digits:logistic")
    split = load_dataset("digits").split(test_size=0.3, seed=0)
    pools = make_pools(split.x_test, split.y_test, "split", 0)
    streams = DeploymentSeeds.from_seed(seed)  # each component on its own stream
    adversary = build_adversary(
        "test-set", pools.attacker_x, pools.attacker_y, 10, seed=streams.adversary
    )
    local = Arena(ArenaConfig(queries=budget, benign_ratio=ratio)).run(
        build_defense("memorize-abstain", served.model),
        [adversary],
        pools.benign_x,
        pools.benign_y,
        seed=streams.arena,
    )
    assert attack_metrics(remote).r_tilde == attack_metrics(local).r_tilde
    np.testing.assert_array_equal(remote.answer, local.answer)
    np.testing.assert_array_equal(remote.reason, local.reason)
    summary = json.loads((out / "summary.json").read_text())[0]
    assert summary["r_tilde"] == attack_metrics(local).r_tilde
    assert summary["abstain_adversarial"] > 0  # the repeats were caught
    assert summary["r_tilde"] < 0.2  # memorization keeps r~ near r

    # queries.csv joins every event-log row with the gateway's audit log
    sent = (out / "queries.csv").read_text().splitlines()[1:]
    assert len(sent) == len(remote)
    audit_rows = {r["query_id"]: r for r in map(json.loads, audit.read_text().splitlines())}
    for line in sent:
        t, request_id, query_id, _ = line.split(",")
        row = audit_rows[query_id]
        assert row["request_id"] == request_id
        answer = remote.answer[int(t)]
        assert (row["answer"] if row["answer"] is not None else -1) == answer


def test_keys_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    assert main(["keys", "create", "ci", "--rate", "5", "--burst", "10", "--keys-db", db]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("mt_")
    assert main(["keys", "list", "--keys-db", db, "--json"]) == 0
    (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["name"] == "ci" and listed["rate"] == 5 and token not in json.dumps(listed)
    assert main(["keys", "revoke", "ci", "--keys-db", db]) == 0
    assert "revoked" in capsys.readouterr().out
    # the token itself is not in the file, only its digest
    assert token.encode() not in (tmp_path / "k.db").read_bytes()
    for argv in (
        ["keys", "create", "bad name!", "--keys-db", db],
        ["keys", "revoke", "nobody", "--keys-db", db],
        ["keys", "list", "--keys-db", "ftp://x"],
        ["serve", "--model", "no-such-thing"],
        ["serve", "--model", "digits:logistic", "--defense", "nonsense(x=1)"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        # one message (the console may wrap it), never a traceback
        assert err.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err
