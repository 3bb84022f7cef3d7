"""The gateway under outages and hostile clients: each test reproduces a hole found by
attacking the gateway from outside, against a real server on a loopback port and a
real ``redis-server``."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from gateway_server import GatewayServer, auth, classify, digits_x, gateway_env, new_key
from movingtarget.attacks.remote.client import GatewayClient, RemoteError
from redis_server import running_redis

__all__ = ["digits_x", "gateway_env"]


def refusals(url: str, token: str, kind: str) -> float:
    text = httpx.get(f"{url}/metrics", headers=auth(token)).text
    prefix = f'movingtarget_refusals_total{{kind="{kind}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].split(" ")[1]) if lines else 0.0


def test_a_request_over_the_burst_is_413_and_the_client_stops(
    tmp_path: Path, gateway_env, digits_x
) -> None:
    # 11 inputs against a burst of 10 used to get 429 with Retry-After: 1 forever
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    token = new_key(keys, "small", rate=1, burst=10)
    waits: list[float] = []
    with GatewayServer("--keys-db", keys, env=gateway_env, log=tmp_path / "serve.log") as server:
        r = classify(server.url, token, digits_x[:11])
        assert r.status_code == 413 and "Retry-After" not in r.headers
        assert "burst of 10 queries" in r.json()["error"]
        client = GatewayClient(server.url, token, sleep=waits.append)
        try:
            with pytest.raises(RemoteError) as err:
                client.classify(digits_x[:11])
            assert err.value.status == 413
            assert waits == [] and client.refused == 0  # it did not wait, it stopped
            assert client.classify(digits_x[:10]).labels.shape == (10,)  # 10 do fit
        finally:
            client.close()


def test_a_memory_outage_is_a_503_that_names_no_address(
    tmp_path: Path, gateway_env, digits_x
) -> None:
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    token = new_key(keys, "tenant", rate=0)
    with running_redis() as redis:
        args = ("--keys-db", keys, "--store", redis.url)
        with GatewayServer(*args, env=gateway_env, log=tmp_path / "serve.log") as server:
            url = server.url
            assert classify(url, token, digits_x[:2]).status_code == 200
            assert httpx.get(f"{url}/readyz").status_code == 200
            before = refusals(url, token, "unavailable")
            redis.stop()  # the memory store goes away under the running replica
            port = redis.url.rsplit(":", 1)[1].split("/")[0]
            bodies = []
            for infer in (
                lambda: classify(url, token, digits_x[2:3]),
                lambda: httpx.post(
                    f"{url}/v2/models/digits-logistic/infer",
                    json={
                        "inputs": [
                            {
                                "name": "input",
                                "shape": [1, 64],
                                "datatype": "FP32",
                                "data": digits_x[3].tolist(),
                            }
                        ]
                    },
                    headers=auth(token),
                ),
            ):
                r = infer()
                assert r.status_code == 503, r.text
                assert r.headers["Retry-After"] == "1"
                assert r.json()["type"] == "unavailable"
                bodies.append(r.text)
            for text in bodies:  # nothing internal: no store, address or port
                assert "redis" not in text.lower() and port not in text and "127.0.0.1" not in text
            assert refusals(url, token, "unavailable") == before + 2
            # readiness fails (a load balancer takes the replica out); liveness holds
            ready = httpx.get(f"{url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"] == {"started": True, "keys": True, "memory": False}
            assert httpx.get(f"{url}/v2/health/ready").status_code == 503
            assert httpx.get(f"{url}/healthz").status_code == 200
            assert httpx.get(f"{url}/v2/health/live").status_code == 200
        log = (tmp_path / "serve.log").read_text()
        assert "unreachable" in log  # the operator sees what failed


def test_a_key_store_outage_is_a_503_too(tmp_path: Path, gateway_env, digits_x) -> None:
    with running_redis() as redis:
        token = new_key(redis.url, "tenant", rate=0)
        args = ("--keys-db", redis.url)
        with GatewayServer(*args, env=gateway_env, log=tmp_path / "serve.log") as server:
            assert classify(server.url, token, digits_x[:1]).status_code == 200
            redis.stop()
            r = classify(server.url, token, digits_x[1:2])
            assert r.status_code == 503 and r.headers["Retry-After"] == "1"
            assert "redis" not in r.text.lower()
            ready = httpx.get(f"{server.url}/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["keys"] is False


def test_readiness_needs_no_key_and_says_ready(tmp_path: Path, gateway_env) -> None:
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    with GatewayServer("--keys-db", keys, env=gateway_env, log=tmp_path / "serve.log") as server:
        r = httpx.get(f"{server.url}/readyz")
        assert r.status_code == 200
        assert r.json() == {
            "status": "ready",
            "checks": {"started": True, "keys": True, "memory": True},
        }
        assert np.isfinite(r.elapsed.total_seconds())
