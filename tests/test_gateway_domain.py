"""Inputs outside the served model's input domain, end to end against a real server:
refused (422, naming the feature) or clipped, before the defense sees them, never
charged to the key, never remembered, and counted."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from gateway_server import GatewayServer, auth, classify, digits_x, gateway_env, new_key

MODEL = "digits-logistic"
__all__ = ["digits_x", "gateway_env"]


def _start(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str], *args: str
) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("gw-domain")
    keys = f"sqlite:///{root / 'keys.db'}"
    token = new_key(keys, "tester", rate=0)
    with GatewayServer("--keys-db", keys, *args, env=env, log=root / "serve.log") as server:
        yield {"url": server.url, "keys": keys, "token": token}


@pytest.fixture(scope="module")
def refusing(tmp_path_factory, gateway_env) -> Iterator[dict[str, str]]:
    """The default: the domain of the training data, out-of-domain inputs refused."""
    yield from _start(tmp_path_factory, gateway_env)


@pytest.fixture(scope="module")
def clipping(tmp_path_factory, gateway_env) -> Iterator[dict[str, str]]:
    """A stated domain [0, 1] for every feature; inputs outside it are clipped."""
    yield from _start(
        tmp_path_factory, gateway_env, "--input-range", "0,1", "--out-of-domain", "clip"
    )


def refusals(url: str, token: str, kind: str = "out-of-domain") -> float:
    text = httpx.get(f"{url}/metrics", headers=auth(token)).text
    prefix = f'movingtarget_refusals_total{{kind="{kind}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def infer(url: str, token: str, x: np.ndarray) -> httpx.Response:
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}
    return httpx.post(
        f"{url}/v2/models/{MODEL}/infer", json={"inputs": [tensor]}, headers=auth(token)
    )


def refused_out_of_domain(r: httpx.Response, where: str, value: str, feature: int) -> None:
    assert r.status_code == 422, r.text
    err = r.json()
    assert set(err) == {"error", "type", "status"} and err["type"] == "out-of-domain", err
    message = err["error"]
    assert message.startswith(f"{where} = {value} is outside the model's input domain"), message
    assert message.endswith(f"for feature {feature}"), message
    assert "Traceback" not in message


def test_a_huge_value_in_one_feature_is_refused_naming_it(refusing, digits_x):
    url, token = refusing["url"], refusing["token"]
    x = digits_x[200:202].copy()
    x[1, 17] = 3e38
    refused_out_of_domain(classify(url, token, x), "inputs[1][17]", "3e+38", 17)
    refused_out_of_domain(infer(url, token, x), "inputs[0].data[1][17]", "3e+38", 17)


def test_raw_digits_of_0_to_16_are_refused(refusing, digits_x):
    url, token = refusing["url"], refusing["token"]
    x = digits_x[210:213] * 16
    r = classify(url, token, x)
    assert r.status_code == 422 and r.json()["type"] == "out-of-domain", r.text
    assert infer(url, token, x).status_code == 422


def test_in_domain_digits_are_still_answered(refusing, digits_x):
    # every digit (training and test split alike) is inside the default domain
    url, token = refusing["url"], refusing["token"]
    for start in range(300, len(digits_x), 256):
        r = classify(url, token, digits_x[start : start + 256])
        assert r.status_code == 200, r.text
    assert infer(url, token, digits_x[:3]).status_code == 200


def test_refused_inputs_are_not_remembered_nor_charged_and_are_counted(refusing, digits_x):
    url, token = refusing["url"], refusing["token"]
    before = refusals(url, token)
    once = new_key(refusing["keys"], "one-query", rate=0, quota=1, quota_window=3600)
    x = digits_x[220:221].copy()
    x[0, 5] = 3e38
    assert classify(url, once, x).status_code == 422
    assert infer(url, once, x).status_code == 422
    assert classify(url, once, digits_x[221:222] * 16).status_code == 422
    assert refusals(url, token) == before + 3
    # the key's one query is still there, and the in-domain input is news to the memory
    inside = np.clip(x, 0, 1)
    r = classify(url, once, inside)
    assert r.status_code == 200, r.text
    assert r.json()["answers"][0]["reason"] == "model"


def test_the_domain_is_in_the_model_metadata(refusing, digits_x):
    url, token = refusing["url"], refusing["token"]
    meta = httpx.get(f"{url}/v2/models/{MODEL}", headers=auth(token)).json()
    domain = meta["parameters"]["input_domain"]
    assert domain["out_of_domain"] == "refuse" and domain["source"].startswith("training")
    lo, hi = np.array(domain["lo"]), np.array(domain["hi"])
    assert lo.shape == hi.shape == (64,) and (lo < 0).all() and (hi > 0).all()
    assert ((lo <= digits_x) & (digits_x <= hi)).all()  # every digit is inside
    assert (hi < 16).all()  # raw 0-16 digits are not


def test_clip_mode_answers_as_for_the_clipped_input(clipping, digits_x, gateway_env):
    from movingtarget.gateway.server.serving import load_served_model

    url, token = clipping["url"], clipping["token"]
    model = load_served_model("digits:logistic", cache_dir=gateway_env["MOVINGTARGET_CACHE"])
    x = digits_x[230:240] * 16
    x[0, 17] = 3e38
    x[1, 3] = -5
    inside = np.clip(x, 0, 1).astype(np.float32)
    raw = classify(url, token, x)
    assert raw.status_code == 200, raw.text
    answers = raw.json()["answers"]
    assert {a["reason"] for a in answers} == {"model"}
    labels = [a["label"] for a in answers]
    assert labels == model.model.predict_proba(inside).argmax(axis=1).tolist()
    # the defense saw (and remembers) the clipped input: sent again, it is a repeat
    again = classify(url, token, inside).json()["answers"]
    assert {a["reason"] for a in again} == {"repeat"}
    # the KServe route clips too (a fresh input, the same rule)
    y = digits_x[240:250] * 16
    v2 = infer(url, token, y)
    assert v2.status_code == 200, v2.text
    inside_y = np.clip(y, 0, 1).astype(np.float32)
    assert v2.json()["outputs"][0]["data"] == model.model.predict_proba(inside_y).argmax(1).tolist()
    assert refusals(url, clipping["token"]) == 0
    text = httpx.get(f"{url}/metrics", headers=auth(clipping["token"])).text
    assert "movingtarget_clipped_inputs_total 20.0" in text, text


def test_bad_domain_flags_are_refused_at_start(tmp_path, gateway_env):
    from movingtarget.errors import ConfigError
    from movingtarget.gateway import GatewayConfig

    for bad in ({"input_range": (1.0, 0.0)}, {"out_of_domain": "ignore"}):
        with pytest.raises(ConfigError):
            GatewayConfig(**bad).check()  # type: ignore[arg-type]
