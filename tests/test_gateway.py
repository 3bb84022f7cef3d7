"""The gateway end to end, against a real server (``movingtarget serve`` in a subprocess
on a free loopback port): keys, limits, repeats, validation, KServe v2, feedback,
metrics, audit log."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from gateway_server import GatewayServer, auth, classify, digits_x, gateway_env, new_key
from movingtarget.cli.main import main
from movingtarget.gateway.access.keys import open_keys

MODEL = "digits-logistic"
__all__ = ["digits_x", "gateway_env"]  # fixtures shared with test_gateway_scaleout


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, gateway_env: dict[str, str]
) -> Iterator[dict[str, str]]:
    """A memory:// gateway with an audit log and an unlimited key."""
    root = tmp_path_factory.mktemp("gw")
    keys = f"sqlite:///{root / 'keys.db'}"
    audit = root / "audit.jsonl"
    token = new_key(keys, "tester", rate=0)
    server = GatewayServer(
        "--keys-db", keys, "--audit", str(audit), env=gateway_env, log=root / "serve.log"
    )
    with server:
        yield {"url": server.url, "keys": keys, "token": token, "audit": str(audit)}


# -- access ------------------------------------------------------------------------------


def test_refused_without_a_key_or_with_an_unknown_one(served, digits_x):
    url = served["url"]
    r = httpx.post(f"{url}/v1/classify", json={"inputs": digits_x[:1].tolist()})
    assert r.status_code == 401
    assert r.json()["type"] == "unauthorized" and "API key" in r.json()["error"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert classify(url, "mt_not-a-key", digits_x[:1]).status_code == 401
    for path in ("/metrics", f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/ready"):
        assert httpx.get(url + path).status_code == 401
    # health needs no key
    for path in ("/healthz", "/v2/health/live", "/v2/health/ready", "/openapi.json"):
        assert httpx.get(url + path).status_code == 200


def test_x_api_key_header_works_too(served, digits_x):
    r = httpx.post(
        f"{served['url']}/v1/classify",
        json={"input": digits_x[5].tolist()},
        headers={"X-API-Key": served["token"]},
    )
    assert r.status_code == 200 and len(r.json()["answers"]) == 1


def test_revoked_key_gets_403(served, digits_x):
    token = new_key(served["keys"], "leaver", rate=0)
    assert classify(served["url"], token, digits_x[10:11]).status_code == 200
    store = open_keys(served["keys"])
    store.revoke("leaver")
    store.close()
    r = classify(served["url"], token, digits_x[11:12])
    assert r.status_code == 403 and r.json()["type"] == "revoked"


def test_rate_limit_is_429_with_retry_after(served, digits_x):
    # a bucket of 2 queries refilled at one query per 1000 s: the third must wait
    token = new_key(served["keys"], "slow", rate=0.001, burst=2)
    url = served["url"]
    assert classify(url, token, digits_x[20:21]).status_code == 200
    assert classify(url, token, digits_x[21:22]).status_code == 200
    r = classify(url, token, digits_x[22:23])
    assert r.status_code == 429
    assert r.json()["type"] == "rate-limited"
    assert 1 <= int(r.headers["retry-after"]) <= 1000


def test_a_batch_costs_one_token_per_input(served, digits_x):
    token = new_key(served["keys"], "batcher", rate=0.001, burst=5)
    assert classify(served["url"], token, digits_x[30:34]).status_code == 200  # 4 of 5
    assert classify(served["url"], token, digits_x[34:36]).status_code == 429  # 2 > 1 left


def test_quota_is_429_with_retry_after(served, digits_x):
    token = new_key(served["keys"], "quota", rate=0, quota=3, quota_window=3600)
    url = served["url"]
    assert classify(url, token, digits_x[40:43]).status_code == 200
    r = classify(url, token, digits_x[43:44])
    assert r.status_code == 429 and r.json()["type"] == "quota-limited"
    assert 1 <= int(r.headers["retry-after"]) <= 3600


# -- answers -----------------------------------------------------------------------------


def test_abstains_on_a_repeat(served, digits_x):
    url, token = served["url"], served["token"]
    first = classify(url, token, digits_x[100:101]).json()["answers"][0]
    assert not first["abstained"] and first["reason"] == "model"
    assert 0 <= first["label"] < 10
    again = classify(url, token, digits_x[100:101]).json()["answers"][0]
    assert again == {**again, "label": None, "abstained": True, "reason": "repeat"}
    # a repeat inside one batch: the first is answered, the second abstains
    batch = classify(url, token, digits_x[[101, 101]]).json()["answers"]
    assert [a["reason"] for a in batch] == ["model", "repeat"]


def test_kserve_v2_infer_metadata_and_abstention_tensor(served, digits_x):
    url, h = served["url"], auth(served["token"])
    meta = httpx.get(f"{url}/v2/models/{MODEL}", headers=h).json()
    assert meta["inputs"][0]["shape"] == [-1, 64]
    assert {o["name"] for o in meta["outputs"]} == {"label", "abstained", "reason", "query_id"}
    assert httpx.get(f"{url}/v2/models/{MODEL}/ready", headers=h).json()["ready"] is True
    x = digits_x[200:202]
    body = {
        "inputs": [
            {"name": "input", "shape": [2, 64], "datatype": "FP32", "data": x.ravel().tolist()}
        ]
    }
    out = httpx.post(f"{url}/v2/models/{MODEL}/infer", json=body, headers=h).json()
    tensors = {o["name"]: o for o in out["outputs"]}
    assert tensors["label"]["datatype"] == "INT64" and tensors["abstained"]["data"] == [False] * 2
    # the same inputs again (nested data this time): explicit abstention, label -1
    body["inputs"][0]["data"] = x.tolist()
    again = httpx.post(f"{url}/v2/models/{MODEL}/infer", json=body, headers=h).json()
    tensors = {o["name"]: o for o in again["outputs"]}
    assert tensors["label"]["data"] == [-1, -1]
    assert tensors["abstained"]["data"] == [True, True]
    assert tensors["reason"]["data"] == ["repeat", "repeat"]
    # an unknown model is a 404 in the protocol's error form
    r = httpx.post(f"{url}/v2/models/nope/infer", json=body, headers=h)
    assert r.status_code == 404 and "error" in r.json()


def test_feedback_is_stored_and_bound_to_the_key(served, digits_x):
    url, token = served["url"], served["token"]
    qid = classify(url, token, digits_x[300:301]).json()["answers"][0]["query_id"]
    r = httpx.post(
        f"{url}/v1/feedback", json={"labels": [{"query_id": qid, "label": 3}]}, headers=auth(token)
    )
    assert r.status_code == 200 and r.json() == {"stored": 1, "learned": 0}
    other = new_key(served["keys"], "other", rate=0)
    r = httpx.post(
        f"{url}/v1/feedback", json={"labels": [{"query_id": qid, "label": 3}]}, headers=auth(other)
    )
    assert r.status_code == 400 and "not issued to this key" in r.json()["error"]
    r = httpx.post(
        f"{url}/v1/feedback", json={"labels": [{"query_id": qid, "label": 10}]}, headers=auth(token)
    )
    assert r.status_code == 400
    # a non-ASCII id (as a fuzzer sends) is refused as not ours, not a 500
    forged = qid.rpartition(".")[0] + ".\u00fe\U0001f600"
    r = httpx.post(
        f"{url}/v1/feedback",
        json={"labels": [{"query_id": forged, "label": 3}]},
        headers=auth(token),
    )
    assert r.status_code == 400 and "not issued to this key" in r.json()["error"]
    store = open_keys(served["keys"])
    rows = store.feedback()
    store.close()
    assert [(row["query_id"], row["label"]) for row in rows] == [(qid, 3)]


def test_metrics_count_queries_abstentions_repeats_and_refusals(served, digits_x):
    url, token = served["url"], served["token"]
    classify(url, token, digits_x[[400, 400]])
    text = httpx.get(f"{url}/metrics", headers=auth(token)).text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("movingtarget_") and " " in line
    }
    assert values["movingtarget_queries_total"] >= 2
    assert values['movingtarget_abstentions_total{reason="repeat"}'] >= 1
    assert values["movingtarget_repeats_caught_total"] >= 1
    assert 'movingtarget_request_seconds_bucket{endpoint="/v1/classify"' in text
    assert values["movingtarget_up"] == 1


def test_a_bad_body_is_refused_after_the_key_check_on_every_route(served):
    url, token = served["url"], served["token"]
    json_type = {"Content-Type": "application/json"}

    def invalid_json_refusals() -> float:
        text = httpx.get(f"{url}/metrics", headers=auth(token)).text
        prefix = 'movingtarget_refusals_total{kind="invalid-json"} '
        return sum(
            float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)
        )

    before = invalid_json_refusals()
    for path in ("/v1/classify", "/v1/feedback", f"/v2/models/{MODEL}/infer"):
        wrong = httpx.post(url + path, content=b"{", headers={**auth("mt_wrong"), **json_type})
        assert wrong.status_code == 401, path  # the key first
        bad = httpx.post(url + path, content=b"{", headers={**auth(token), **json_type})
        assert bad.status_code == 400, path
    assert invalid_json_refusals() == before + 3  # each refused body counted once


def test_audit_log_has_one_line_per_query_with_the_deciding_mechanism(served, digits_x):
    url, token = served["url"], served["token"]
    r = httpx.post(
        f"{url}/v1/classify",
        json={"inputs": digits_x[[500, 500]].tolist()},
        headers={**auth(token), "X-Request-ID": "audit-check-1"},
    )
    assert r.headers["x-request-id"] == "audit-check-1"
    rows = [json.loads(line) for line in Path(served["audit"]).read_text().splitlines()]
    mine = [row for row in rows if row["request_id"] == "audit-check-1"]
    assert [row["mechanism"] for row in mine] == ["argmax", "memorize(on_repeat=abstain)"]
    assert [row["answer"] is None for row in mine] == [False, True]
    assert {row["key"] for row in mine} == {"tester"}
    assert mine[0]["model_version"] == r.json()["model_version"]
    assert [row["query_id"] for row in mine] == [a["query_id"] for a in r.json()["answers"]]


def test_a_reused_request_id_never_reuses_query_ids(served, digits_x):
    # a client may send the same X-Request-ID twice: query ids stay unique, so feedback
    # and audit joins cannot land on the wrong query; the request id is kept beside them
    url, token = served["url"], served["token"]
    headers = {**auth(token), "X-Request-ID": "dup1"}
    ids = []
    for row in (510, 511):
        r = httpx.post(
            f"{url}/v1/classify", json={"inputs": digits_x[[row]].tolist()}, headers=headers
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == "dup1"
        ids.append(r.json()["answers"][0]["query_id"])
    assert ids[0] != ids[1]
    audit = [json.loads(line) for line in Path(served["audit"]).read_text().splitlines()]
    mine = [row for row in audit if row["request_id"] == "dup1"]
    assert sorted(row["query_id"] for row in mine) == sorted(ids)
    # feedback on each id lands on its own query
    r = httpx.post(
        f"{url}/v1/feedback",
        json={"labels": [{"query_id": ids[0], "label": 1}, {"query_id": ids[1], "label": 2}]},
        headers=auth(token),
    )
    assert r.json() == {"stored": 2, "learned": 0}


# -- validation --------------------------------------------------------------------------

BAD_BODIES = [
    (b"", 400),
    (b"{", 400),
    (b"[1, 2]", 422),
    (b'{"inputs": []}', 400),
    (b'{"inputs": [[1, 2]]}', 400),  # wrong shape
    (b'{"inputs": [[' + b"1," * 63 + b'"a"]]}', 400),  # text
    (b'{"inputs": [[' + b"1," * 63 + b"NaN]]}", 400),
    (b'{"inputs": [[' + b"1," * 63 + b"1e400]]}", 400),  # infinite
    (b'{"inputs": [[' + b"1," * 63 + b"1e39]]}", 400),  # beyond float32
    (b'{"inputs": [[' + b"1," * 63 + b"null]]}", 400),
    (b'{"inputs": [[1, [2]]]}', 400),  # ragged
    (b'{"input": [1], "inputs": [[1]]}', 422),
    (b'{"inputs": [[1]], "extra": 1}', 422),
    (b"[" * 100_000 + b"]" * 100_000, 400),  # nested beyond the parser
    (b'{"inputs": [[' + b"9" * 5000 + b"]]}", 400),  # an integer too long to read
]


@pytest.mark.parametrize(("body", "status"), BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_bad_bodies_get_a_clear_4xx_json_error(served, body, status):
    r = httpx.post(
        f"{served['url']}/v1/classify",
        content=body,
        headers={**auth(served["token"]), "Content-Type": "application/json"},
    )
    assert r.status_code == status, r.text
    err = r.json()
    assert set(err) == {"error", "type", "status"} and err["status"] == status
    assert err["error"]


def test_request_limits(served, digits_x):
    url, token = served["url"], served["token"]
    r = classify(url, token, np.zeros((257, 64), np.float32))
    assert r.status_code == 413 and "the limit is 256" in r.json()["error"]
    huge = b'{"inputs": [[' + b"0," * 3_000_000 + b"0]]}"
    r = httpx.post(f"{url}/v1/classify", content=huge, headers=auth(token))
    assert r.status_code == 413 and r.json()["type"] == "too-large"


def test_bad_requests_never_reach_memory(served, digits_x):
    # an input refused for a bad value is not remembered: sent properly, it is new
    url, token = served["url"], served["token"]
    x = digits_x[600:601].copy()
    bad = x.tolist()
    bad[0][-1] = "x"
    assert (
        httpx.post(f"{url}/v1/classify", json={"inputs": bad}, headers=auth(token)).status_code
        == 400
    )
    assert classify(url, token, x).json()["answers"][0]["reason"] == "model"


def test_bad_key_is_told_before_a_bad_body(served):
    r = httpx.post(f"{served['url']}/v1/classify", content=b"{", headers=auth("mt_unknown"))
    assert r.status_code == 401


def refused(r: httpx.Response, status: int, message: str) -> None:
    """``r`` is the gateway's one-line JSON error ``status`` whose message holds ``message``."""
    assert r.status_code == status, r.text
    err = r.json()
    assert set(err) == {"error", "type", "status"} and err["status"] == status, err
    assert message in err["error"], err["error"]


def infer(url: str, token: str, tensor: dict[str, object]) -> httpx.Response:
    body = {"inputs": [{"name": "input", "shape": [1, 64], **tensor}]}
    return httpx.post(f"{url}/v2/models/{MODEL}/infer", json=body, headers=auth(token))


INT_RANGES = {
    "INT8": (-128, 127),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 255),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}


def passes_the_type_check(r: httpx.Response) -> bool:
    # a value its datatype holds is accepted as typed; the model's input domain may then
    # refuse it (422 out-of-domain): that is a later check, not the type's
    return r.status_code == 200 or (r.status_code == 422 and r.json()["type"] == "out-of-domain")


def test_kserve_integer_tensors_must_fit_their_datatype(served):
    url, token = served["url"], served["token"]
    for datatype, (lo, hi) in INT_RANGES.items():
        for value in (lo - 1, hi + 1):
            r = infer(url, token, {"datatype": datatype, "data": [3] * 63 + [value]})
            refused(r, 400, f"inputs[0].data: {value} does not fit {datatype} [{lo}, {hi}]")
        ok = infer(url, token, {"datatype": datatype, "data": [lo, hi] + [1] * 62})
        assert passes_the_type_check(ok), (datatype, ok.text)
    r = infer(url, token, {"datatype": "INT8", "data": [3] * 63 + [True]})
    refused(r, 400, "inputs[0].data: true is not a number")
    # BOOL holds booleans only
    r = infer(url, token, {"datatype": "BOOL", "data": [True] * 63 + [2]})
    refused(r, 400, "inputs[0].data: 2 is not a boolean")
    ok = infer(url, token, {"datatype": "BOOL", "data": [True, False] * 32})
    assert passes_the_type_check(ok), ok.text


def test_kserve_float_tensors_must_fit_their_datatype(served):
    url, token = served["url"], served["token"]
    r = infer(url, token, {"datatype": "FP16", "data": [1.5] * 63 + [65520]})
    refused(r, 400, "inputs[0].data: 65520 does not fit FP16 [-65504, 65504]")
    r = infer(url, token, {"datatype": "FP16", "data": [-65520.0] + [1.5] * 63})
    refused(r, 400, "inputs[0].data: -65520.0 does not fit FP16")
    r = infer(url, token, {"datatype": "FP32", "data": [1.5] * 63 + [1e39]})
    refused(r, 400, "inputs[0].data: 1e+39 does not fit FP32 [-3.4028235e+38, 3.4028235e+38]")
    ok = infer(url, token, {"datatype": "FP16", "data": [65504, -65504] + [2.5] * 62})
    assert passes_the_type_check(ok), ok.text


def test_kserve_shape_must_be_json_integers(served):
    url, token = served["url"], served["token"]
    for shape, shown in ((["1", "64"], '"1"'), ([1.0, 64], "1.0"), ([1, True], "true")):
        r = infer(url, token, {"shape": shape, "datatype": "FP32", "data": [0.5] * 64})
        refused(r, 400, f"inputs[0].shape must be a list of integers, got {shown}")


def test_feedback_labels_must_be_json_integers(served, digits_x):
    url, token = served["url"], served["token"]
    qid = classify(url, token, digits_x[700:701]).json()["answers"][0]["query_id"]
    for label, shown in (("3", '"3"'), (True, "true"), (3.0, "3.0")):
        r = httpx.post(
            f"{url}/v1/feedback",
            json={"labels": [{"query_id": qid, "label": label}]},
            headers=auth(token),
        )
        refused(r, 400, f"labels[0].label must be an integer, got {shown}")
    store = open_keys(served["keys"])
    rows = store.feedback()
    store.close()
    assert qid not in {row["query_id"] for row in rows}


def test_post_bodies_must_be_sent_as_json(served, digits_x):
    url, token = served["url"], served["token"]
    bodies = {
        "/v1/classify": {"inputs": digits_x[710:711].tolist()},
        "/v1/feedback": {"labels": [{"query_id": "x", "label": 1}]},
        f"/v2/models/{MODEL}/infer": {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "data": digits_x[711].tolist(),
                }
            ]
        },
    }
    for path, body in bodies.items():
        raw = json.dumps(body).encode()
        for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = auth(token) if ctype is None else {**auth(token), "Content-Type": ctype}
            r = httpx.post(url + path, content=raw, headers=headers)
            if ctype is None and path.endswith("/infer"):
                # the Open Inference Protocol's clients (Triton's) send no Content-Type
                assert r.status_code == 200, r.text
                continue
            refused(r, 415, f"content type must be application/json, got {ctype or 'none'}")
    # parameters are fine
    r = httpx.post(
        url + "/v1/classify",
        content=json.dumps(bodies["/v1/classify"]).encode(),
        headers={**auth(token), "Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert r.status_code == 200, r.text


def test_duplicate_json_keys_are_refused_at_any_depth(served, digits_x):
    url, token = served["url"], served["token"]
    row = json.dumps(digits_x[720].tolist())
    tensor = '{"name": "input", "shape": [1, 64], "datatype": "FP32", "datatype": "FP64"'
    cases = {
        "/v1/classify": (f'{{"inputs": [{row}], "inputs": [{row}]}}', "inputs"),
        f"/v2/models/{MODEL}/infer": (
            f'{{"inputs": [{tensor}, "data": {row}}}]}}',
            "datatype",
        ),
        "/v1/feedback": ('{"labels": [{"query_id": "q", "label": 1, "label": 2}]}', "label"),
    }
    for path, (body, key) in cases.items():
        r = httpx.post(
            url + path,
            content=body.encode(),
            headers={**auth(token), "Content-Type": "application/json"},
        )
        refused(r, 400, f"duplicate key {key!r} in the JSON body")


def test_remote_attack_waits_out_429(served):
    # a bucket of 1 refilled at 2 queries/s: the attack must honour Retry-After to finish
    from movingtarget.attacks.remote.attack import RemoteAttack, run_remote_attack

    token = new_key(served["keys"], "throttled", rate=2, burst=1)
    result = run_remote_attack(RemoteAttack(served["url"], [token], budget=3))
    assert len(result.log) == 3
    assert result.refused >= 1 and result.waited_s >= 1


def test_remote_white_box_screening_with_an_exact_copy_of_the_served_model(
    served, monkeypatch, tmp_path
):
    """Screening over HTTP with the attacker's own copy of the served model (trained
    here with the gateway's split settings; its version must match): each screened
    mistake is sent once, so exact memorization (the served default) catches none of
    them and r~ exceeds 0.95 (Goodfellow 2019: -> 1). A copy of another model is refused
    with a message naming both versions."""
    from movingtarget.attacks.remote.attack import RemoteAttack, run_remote_attack
    from movingtarget.errors import ConfigError

    url = served["url"]
    # a copy trained in this process (its own cache), not the gateway's file: the
    # version depends on the model's values only, not on this process's object sharing
    monkeypatch.setenv("MOVINGTARGET_CACHE", str(tmp_path / "attacker-cache"))
    spec = RemoteAttack(
        url, [served["token"]], attack="screening", budget=60, model="digits:logistic"
    )
    result = run_remote_attack(spec)
    assert len(result.log) == 60
    assert result.row["r_tilde"] > 0.95, result.row
    with pytest.raises(ConfigError, match="white-box attacker needs an exact copy"):
        run_remote_attack(
            RemoteAttack(url, [served["token"]], attack="screening", budget=5, model="digits:mlp")
        )
    with pytest.raises(ConfigError, match="white-box"):
        run_remote_attack(RemoteAttack(url, [served["token"]], attack="screening", budget=5))


# -- property-based fuzz over the OpenAPI document ----------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=40,
)
NUMBER = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.integers(-(2**66), 2**66)
ROWS = st.lists(st.lists(NUMBER, min_size=0, max_size=70), min_size=0, max_size=4)
CLASSIFY = st.fixed_dictionaries({"inputs": ROWS}) | st.fixed_dictionaries({"input": JSON})
TENSOR = st.fixed_dictionaries(
    {
        "name": st.text(max_size=8),
        "shape": st.lists(st.integers(-3, 300), max_size=4),
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "UINT8", "BOOL", "BYTES", "x"]),
        "data": st.lists(NUMBER, max_size=130) | JSON,
    }
)
INFER = st.fixed_dictionaries(
    {"inputs": st.lists(TENSOR, max_size=2)},
    optional={
        "id": st.text(max_size=10),
        "outputs": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["label", "reason", "nope"])}),
            max_size=3,
        ),
    },
)
FEEDBACK = st.fixed_dictionaries(
    {
        "labels": st.lists(
            st.fixed_dictionaries(
                {"query_id": st.text(max_size=12), "label": st.integers(-5, 2**40)}
            ),
            max_size=3,
        )
    }
)
BODIES = {"/v1/classify": CLASSIFY, "/v1/feedback": FEEDBACK, "/infer": INFER}


@pytest.fixture(scope="module")
def operations(served) -> list[tuple[str, str]]:
    """Every (method, path) in the live OpenAPI document."""
    doc = httpx.get(f"{served['url']}/openapi.json").json()
    return [(m.upper(), p) for p, item in doc["paths"].items() for m in item]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_requests_never_get_a_5xx(served, operations, data):
    method, path = data.draw(st.sampled_from(operations), label="operation")
    for param in ("{name}", "{version}"):
        if param in path:
            value = data.draw(st.sampled_from([MODEL, "x"]) | st.text(min_size=1, max_size=6))
            path = path.replace(param, quote(value, safe=""))
    key = data.draw(st.sampled_from([served["token"], None, "mt_wrong", "Bearer"]), label="key")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    kwargs: dict[str, object] = {}
    if method == "POST":
        schema = next((s for suffix, s in BODIES.items() if path.endswith(suffix)), JSON)
        body = data.draw(schema | JSON, label="body")
        raw = data.draw(st.booleans(), label="raw bytes")
        kwargs["content"] = data.draw(st.binary(max_size=64)) if raw else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    r = httpx.request(method, served["url"] + path, headers=headers, timeout=30, **kwargs)
    assert r.status_code < 500, (method, path, r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.json()["status"] == r.status_code


def test_remote_model_is_a_black_box_classifier(served, digits_x):
    from movingtarget.models.remote import RemoteModel

    model = RemoteModel(served["url"], served["token"])
    try:
        assert (model.n_classes, model.input_shape, model.name) == (10, (64,), MODEL)
        x = digits_x[900:903]
        first = model.predict(x)
        assert ((first >= 0) & (first < 10)).all()
        proba = model.predict_proba(x)  # the same inputs again: abstained, uniform rows
        assert model.last_reasons == ["repeat"] * 3
        np.testing.assert_allclose(proba, 0.1)
    finally:
        model.close()


def test_audit_command_reports_coverage_and_error_on_answered(served, digits_x, capsys):
    url, token = served["url"], served["token"]
    answers = classify(url, token, digits_x[[950, 950]]).json()["answers"]
    given = answers[0]["label"]
    httpx.post(
        f"{url}/v1/feedback",
        json={"labels": [{"query_id": answers[0]["query_id"], "label": (given + 1) % 10}]},
        headers=auth(token),
    )
    assert main(["audit", served["audit"], "--keys-db", served["keys"]]) == 0
    out = capsys.readouterr().out
    (line,) = [row for row in out.splitlines() if row.startswith("| tester |")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert "repeat" in cells[3]
    assert int(cells[4]) >= 1 and float(cells[5]) > 0  # the labeled answer was wrong


# -- schemathesis: cases generated from the OpenAPI schema itself --------------------------


@pytest.fixture(scope="module")
def schema_strategies(served) -> list[st.SearchStrategy[schemathesis.Case]]:
    """One schemathesis strategy per operation of the live OpenAPI document, both valid
    and schema-violating cases."""
    schema = schemathesis.openapi.from_url(f"{served['url']}/openapi.json")
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    out = []
    for result in schema.get_all_operations():
        operation = result.ok()
        out += [operation.as_strategy(generation_mode=mode) for mode in modes]
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_schema_fuzz_finds_no_5xx(served, schema_strategies, data):
    strategy = data.draw(st.sampled_from(schema_strategies), label="operation")
    case = data.draw(strategy, label="case")
    response = case.call(headers=auth(served["token"]), base_url=served["url"])
    case.validate_response(response, checks=[not_a_server_error])


def test_attack_writes_its_results_folder_by_default(served, tmp_path, monkeypatch, capsys):
    # no --out: the event log, summary and report go to results/attack, as the README says
    monkeypatch.chdir(tmp_path)
    assert main(["attack", served["url"], "--key", served["token"], "--budget", "20"]) == 0
    out = tmp_path / "results" / "attack"
    rows = json.loads((out / "summary.json").read_text())
    assert rows[0]["queries"] == 20
    assert (out / "report.md").exists() and len(list((out / "logs").glob("*.csv"))) == 1
    assert "results: results/attack (summary.json" in capsys.readouterr().out


def test_attack_on_an_unreachable_gateway_says_why(tmp_path, capsys):
    with socket.socket() as s:  # a free port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert main(["attack", url, "--key", "k", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot reach {url}: ") and "Connection refused" in err, err
    assert "answered" not in err


def test_metrics_port_serves_a_scraper_on_loopback_without_a_key(tmp_path, gateway_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    with GatewayServer(
        "--keys-db", keys, "--metrics-port", str(port), env=gateway_env, log=tmp_path / "log"
    ) as server:
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200 and "movingtarget_up 1.0" in scraped.text
        assert httpx.get(f"{server.url}/metrics").status_code == 401  # the API port: a key
        # only loopback: the host's own outward address does not reach the exporter
        host = outward_address()
        with socket.socket() as probe:
            probe.settimeout(2)
            assert host is None or probe.connect_ex((host, port)) != 0


def outward_address() -> str | None:
    """This host's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.200", 9))
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


def test_attack_refuses_benign_traffic_beyond_its_pool_in_its_own_flags(served, tmp_path, capsys):
    # digits at --test-size 0.3: a benign pool of 267; 1000 x 0.5 = 500 benign queries
    args = ["attack", served["url"], "--key", served["token"], "--budget", "1000"]
    args += ["--benign-key", served["token"], "--benign-ratio", "0.5", "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--benign-ratio 0.5 x --budget 1000 = 500 benign queries" in err, err
    assert "holds 267 items" in err and "--benign-repeats" in err
    assert not (tmp_path / "summary.json").exists()


def test_model_version_depends_on_values_not_on_object_sharing():
    """Two processes may hold the same model with equal strings shared or not (string
    interning): its version must not change with that, or replicas and an attacker's
    exact copy would read as different models. Pickle's memo writes a shared object as
    a back-reference; the version's bytes do not."""
    from movingtarget.gateway.server.serving import _version

    text = "".join(["ord", "er-C"])
    shared = {"a": text, "b": text, "w": np.arange(4.0)}
    apart = {"a": text, "b": "".join(["orde", "r-C"]), "w": np.arange(4.0)}
    assert shared["b"] is shared["a"] and apart["b"] is not apart["a"]
    assert _version(shared) == _version(apart)  # type: ignore[arg-type]
    assert _version({**apart, "w": np.arange(5.0)}) != _version(apart)  # type: ignore[arg-type]


def test_the_many_account_attacker_sends_each_account_under_its_own_key(served):
    """The adaptive attacker spreads its queries over ``accounts`` client ids; over HTTP
    account ``a`` goes out under the ``a``-th API key, one key per request, so the
    gateway's per-key limits and histories see the accounts the attacker chose."""
    from movingtarget.arena.arena import ACCOUNT_STRIDE, ADVERSARY_CLIENT
    from movingtarget.attacks.remote.attack import RemoteAttack, run_remote_attack

    tokens = [new_key(served["keys"], f"account{i}", rate=0) for i in range(3)]
    spec = RemoteAttack(
        served["url"], tokens, attack="adaptive", params={"accounts": 3, "cover": 0}, budget=60
    )
    result = run_remote_attack(spec)
    log = result.log
    assert len(log) == 60
    sent = {}
    for line in result.queries_csv.splitlines()[1:]:
        t, request_id, _, key = line.split(",")
        sent[int(t)] = (request_id, key)
    account = (log.client - ADVERSARY_CLIENT) // ACCOUNT_STRIDE
    keys = [sent[int(t)][1] for t in log.t]
    assert keys == [f"key{int(a) % 3}" for a in account]
    assert set(keys) == {"key0", "key1", "key2"}
    by_request: dict[str, set[str]] = {}
    for request_id, key in sent.values():
        by_request.setdefault(request_id, set()).add(key)
    assert all(len(k) == 1 for k in by_request.values())  # one key per request


@pytest.mark.parametrize("attack", ["hopskipjump", "square"])
def test_bridged_query_attacks_run_against_a_live_gateway(served, attack):
    """A bridged ART attack over HTTP: every query it makes is one query to the gateway
    (one event-log row, the budget spent exactly). HopSkipJump's steps leave the served
    model's per-feature input domain: the gateway refuses those requests (422
    out-of-domain), and the attacker reads each as a refusal, with reason
    ``out-of-domain``, instead of stopping."""
    from movingtarget.answers import Reason
    from movingtarget.attacks.remote.attack import RemoteAttack, run_remote_attack

    result = run_remote_attack(
        RemoteAttack(served["url"], [served["token"]], attack=attack, budget=40)
    )
    assert len(result.log) == 40
    assert result.row["queries"] == 40
    refused = result.log.reason == int(Reason.OUT_OF_DOMAIN)
    if attack == "hopskipjump":
        assert refused.any()
        assert (result.log.answer[refused] == -1).all()
