"""NVIDIA Triton's own client (``tritonclient[http]``) against ``movingtarget serve``:
its defaults use the binary tensor extension both ways; JSON works too."""

from __future__ import annotations

import numpy as np
import pytest

from gateway_server import GatewayServer, digits_x, gateway_env, new_key

__all__ = ["digits_x", "gateway_env"]

MODEL = "digits-logistic"


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory, gateway_env):
    import tritonclient.http as tc  # in the test extras: a missing one fails, not skips

    root = tmp_path_factory.mktemp("triton")
    keys = f"sqlite:///{root / 'keys.db'}"
    token = new_key(keys, "triton", rate=0)
    with GatewayServer("--keys-db", keys, env=gateway_env, log=root / "serve.log") as server:
        client = tc.InferenceServerClient(server.url.removeprefix("http://"))
        try:
            yield tc, client, {"Authorization": f"Bearer {token}"}, server.url
        finally:
            client.close()


def text(values: np.ndarray) -> list[str]:
    # BYTES outputs: bytes from the binary extension, str from JSON
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def ask(tc, client, headers, x: np.ndarray, binary: bool):
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x.astype(np.float32), binary_data=binary)
    outputs = [
        tc.InferRequestedOutput(name, binary_data=binary)
        for name in ("label", "abstained", "reason", "query_id")
    ]
    # a copy: tritonclient writes its Inference-Header-Content-Length into the dict given
    return client.infer(MODEL, [inp], outputs=outputs, headers=dict(headers))


def test_server_metadata_and_readiness(triton) -> None:
    _, client, headers, _ = triton
    meta = client.get_server_metadata()
    assert meta["name"] == "movingtarget" and "binary_tensor_data" in meta["extensions"]
    assert client.is_server_ready() and client.is_model_ready(MODEL, headers=headers)
    assert client.get_model_metadata(MODEL, headers=headers)["inputs"][0]["shape"] == [-1, 64]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_answers_and_catches_the_repeat(triton, digits_x, binary: bool) -> None:
    tc, client, headers, _ = triton
    x = digits_x[[1200, 1201]] if binary else digits_x[[1300, 1301]]
    first = ask(tc, client, headers, x, binary)
    labels = first.as_numpy("label")
    assert labels.dtype == np.int64 and labels.shape == (2,) and (labels >= 0).all()
    assert first.as_numpy("abstained").tolist() == [False, False]
    assert text(first.as_numpy("reason")) == ["model", "model"]
    ids = text(first.as_numpy("query_id"))
    assert len(set(ids)) == 2
    again = ask(tc, client, headers, x, binary)
    assert again.as_numpy("label").tolist() == [-1, -1]
    assert again.as_numpy("abstained").tolist() == [True, True]
    assert text(again.as_numpy("reason")) == ["repeat", "repeat"]


def test_infer_with_the_clients_defaults(triton, digits_x) -> None:
    # no outputs named: tritonclient asks for every output in binary
    tc, client, headers, _ = triton
    inp = tc.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(digits_x[[1400]].astype(np.float32))
    result = client.infer(MODEL, [inp], headers=dict(headers))
    assert result.as_numpy("label").shape == (1,)
    assert text(result.as_numpy("reason")) == ["model"]


def test_binary_input_of_the_wrong_size_is_refused(triton, digits_x) -> None:
    tc, client, headers, _ = triton
    from tritonclient.utils import InferenceServerException

    inp = tc.InferInput("input", [2, 64], "FP32")  # shape says 2 inputs
    inp.set_data_from_numpy(digits_x[[1500, 1501]].astype(np.float32))
    inp._raw_data = inp._raw_data[:-4]  # one value short
    inp._parameters["binary_data_size"] = len(inp._raw_data)
    with pytest.raises(InferenceServerException, match="bytes of binary data"):
        client.infer(MODEL, [inp], headers=dict(headers))


def test_a_bad_binary_header_is_one_clear_400(triton, digits_x) -> None:
    import httpx

    _, _, headers, base = triton
    body = b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32"}]}'
    for value in ("abc", str(len(body) + 10)):
        r = httpx.post(
            f"{base}/v2/models/{MODEL}/infer",
            content=body,
            headers={**headers, "Inference-Header-Content-Length": value},
        )
        assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    # a JSON header without data and without binary data is refused too
    r = httpx.post(
        f"{base}/v2/models/{MODEL}/infer",
        content=body,
        headers={**headers, "Inference-Header-Content-Length": str(len(body))},
    )
    assert r.status_code == 400 and "has no 'data'" in r.json()["error"]
