"""Per-key refusal counts on the operator's metrics port, and the shipped alert rules
checked by Prometheus's own ``promtool`` (Debian package ``prometheus``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from gateway_server import GatewayServer, auth, classify, digits_x, gateway_env, new_key

__all__ = ["digits_x", "gateway_env"]

RULES = Path(__file__).resolve().parents[1] / "docs" / "gateway-alerts.yml"


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail(
            "promtool is not installed (Debian: apt-get install -y prometheus); "
            "scripts/test.sh installs it",
            pytrace=False,
        )
    return tool


def values(text: str, name: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name)
    }


def test_per_key_refusals_reach_the_operator_and_no_tenant(
    tmp_path: Path, gateway_env, digits_x
) -> None:
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    prober = new_key(keys, "prober", rate=0)
    benign = new_key(keys, "benign", rate=0)
    args = ("--keys-db", keys, "--metrics-port", "0")
    with GatewayServer(*args, env=gateway_env, log=tmp_path / "serve.log") as server:
        for _ in range(5):  # the same input again and again: refused after the first
            classify(server.url, prober, digits_x[[10]])
        classify(server.url, benign, digits_x[20:25])  # five fresh inputs
        log = (tmp_path / "serve.log").read_text()
        port = log.split("metrics (no key) on http://127.0.0.1:")[1].split("/")[0]
        operator = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        tenant = httpx.get(f"{server.url}/metrics", headers=auth(benign)).text
    queries = values(operator, "movingtarget_key_queries_total")
    assert queries == {
        'movingtarget_key_queries_total{key="prober"}': 5.0,
        'movingtarget_key_queries_total{key="benign"}': 5.0,
    }
    refused = values(operator, "movingtarget_key_abstentions_total")
    assert refused == {'movingtarget_key_abstentions_total{key="prober",reason="repeat"}': 4.0}
    # a tenant reading /metrics learns nothing of other keys
    assert 'key="' not in tenant and "prober" not in tenant


def test_the_alert_rules_are_valid_prometheus_rules() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_alert_fires_for_a_mostly_refused_key_and_not_for_benign_traffic(
    tmp_path: Path,
) -> None:
    # 60 queries a minute each; the prober is refused 59 of them, benign users 6
    cases = tmp_path / "alerts-test.yml"
    cases.write_text(
        f"""
rule_files: ["{RULES}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'movingtarget_key_queries_total{{key="prober"}}'
        values: '0+60x30'
      - series: 'movingtarget_key_abstentions_total{{key="prober",reason="near-repeat"}}'
        values: '0+59x30'
      - series: 'movingtarget_key_queries_total{{key="benign"}}'
        values: '0+60x30'
      - series: 'movingtarget_key_abstentions_total{{key="benign",reason="repeat"}}'
        values: '0+6x30'
    alert_rule_test:
      - eval_time: 3m
        alertname: MovingtargetKeyMostlyRefused
        exp_alerts: []
      - eval_time: 25m
        alertname: MovingtargetKeyMostlyRefused
        exp_alerts:
          - exp_labels:
              severity: warning
              key: prober
            exp_annotations:
              summary: "key prober: 98.33% of its queries refused"
              description: >-
                Over 10 minutes, more than half of the queries of key prober were answered
                ABSTAIN by the defense (at least 100 queries). Look at the key's lines in
                the audit log (`movingtarget audit`); revoke or limit it.
"""
    )
    out = subprocess.run([promtool(), "test", "rules", str(cases)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_suspicion_suspends_a_hopskipjump_key_through_a_live_gateway(
    tmp_path: Path, gateway_env
) -> None:
    """A gateway serving near-repeat memory with suspicion: a bridged HopSkipJump over
    HTTP is suspended within its first 30 queries (every later one refused, reason
    ``suspended``), the operator's per-key metrics say so, and a benign key sending fresh
    inputs beside it is not."""
    from movingtarget.answers import Reason
    from movingtarget.attacks.remote.attack import RemoteAttack, run_remote_attack

    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    attacker = new_key(keys, "attacker", rate=0)
    benign = new_key(keys, "benign", rate=0)
    # clipped, not refused: HopSkipJump's steps leave the served domain, and a refused
    # request never reaches the defense (its 422s are counted per key apart)
    defense = ("--defense", "near-repeat-suspicion", "--out-of-domain", "clip")
    args = ("--keys-db", keys, "--metrics-port", "0", *defense)
    with GatewayServer(*args, env=gateway_env, log=tmp_path / "serve.log") as server:
        spec = RemoteAttack(
            server.url,
            [attacker],
            attack="hopskipjump",
            params={"max_iter": 5, "max_eval": 100, "init_eval": 10},
            budget=80,
            benign_keys=[benign],
            benign_ratio=0.5,
        )
        result = run_remote_attack(spec)
        log = (tmp_path / "serve.log").read_text()
        port = log.split("metrics (no key) on http://127.0.0.1:")[1].split("/")[0]
        operator = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    events = result.log
    mine = events.adversary == 0
    suspended = events.reason[mine] == int(Reason.SUSPENDED)
    assert suspended.any(), np.unique(events.reason[mine], return_counts=True)
    first = int(np.argmax(suspended))
    assert first < 30 and suspended[first:].all(), first
    assert not (events.reason[~mine] == int(Reason.SUSPENDED)).any()
    refused = values(operator, "movingtarget_key_abstentions_total")
    key = 'movingtarget_key_abstentions_total{key="attacker",reason="suspended"}'
    assert refused[key] == float(suspended.sum())
    assert not any('key="benign",reason="suspended"' in k for k in refused)
