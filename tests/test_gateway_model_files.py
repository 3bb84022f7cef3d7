"""`movingtarget serve --model FILE` for each model file format, against a real server
on a free loopback port: the same answers as the native model, the graph's own input in
the KServe metadata, the file's SHA-256 in /healthz, the audit log and the metrics; bad
files are one line at start-up."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway_server import GatewayServer, auth, classify, digits_x, gateway_env, new_key
from movingtarget.datasets import Split, load_dataset
from movingtarget.models import Model, build_model
from movingtarget.models.export import export_model
from movingtarget.models.files import file_sha256

__all__ = ["digits_x", "gateway_env"]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The digits logistic model and a torch MLP, written in every format."""
    root = tmp_path_factory.mktemp("model-files")
    split: Split = load_dataset("digits").split(test_size=0.3, seed=0)
    lr = build_model("logistic", split, cache_dir=root / "cache")
    net = build_model("torch-mlp", split, cache_dir=root / "cache", epochs=3, device="cpu")
    mlp = build_model("mlp", split, cache_dir=root / "cache", max_iter=5)
    paths = {
        "lr.onnx": export_model(lr, root / "lr.onnx", split.x_test),
        "lr.skops": export_model(lr, root / "lr.skops", split.x_test),
        "m.pt": export_model(net, root / "m.pt", split.x_test),
        "m.pt2": export_model(net, root / "m.pt2", split.x_test),
        "mlp.skops": export_model(mlp, root / "mlp.skops", split.x_test),
    }
    paths["lr.pkl"] = root / "lr.pkl"
    paths["lr.pkl"].write_bytes(pickle.dumps(lr))
    corrupt = root / "corrupt.onnx"
    corrupt.write_bytes(paths["lr.onnx"].read_bytes()[:200])
    paths["corrupt.onnx"] = corrupt
    return {"root": root, "paths": paths, "models": {"lr": lr, "m": net}}


#: file -> (extra serve flags, input datatype the metadata reports)
FORMATS = {
    "lr.onnx": ([], "FP64"),  # skl2onnx graph in double precision
    "lr.skops": ([], "FP32"),
    "lr.pkl": (["--trust"], "FP32"),
    "m.pt": (["--input-shape", "64"], "FP32"),
    "m.pt2": (["--trust"], "FP32"),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_serve_each_model_file_behind_a_defense(
    name: str, files: dict[str, Any], gateway_env: dict[str, str], digits_x: np.ndarray
) -> None:
    path: Path = files["paths"][name]
    native: Model = files["models"][name.split(".")[0]]
    flags, datatype = FORMATS[name]
    root = files["root"] / name.replace(".", "-")
    root.mkdir()
    keys = f"sqlite:///{root / 'keys.db'}"
    token = new_key(keys, "tester", rate=0)
    audit = root / "audit.jsonl"
    args = ["--model", str(path), *flags, "--defense", "memorize-abstain", "--keys-db", keys]
    with GatewayServer(
        *args, "--audit", str(audit), "--input-range", "0,1", env=gateway_env, log=root / "log"
    ) as server:
        digest = file_sha256(path)
        health = httpx.get(f"{server.url}/healthz").json()
        assert health["model_sha256"] == digest and health["model_version"] == digest[:12]
        model_name = health["model"]
        meta = httpx.get(f"{server.url}/v2/models/{model_name}", headers=auth(token)).json()
        assert meta["inputs"] == [{"name": "input", "datatype": datatype, "shape": [-1, 64]}]
        assert meta["parameters"]["model_sha256"] == digest
        x = digits_x[:40]
        r = classify(server.url, token, x)
        assert r.status_code == 200, r.text
        got = [a["label"] for a in r.json()["answers"]]
        assert got == native.predict_proba(x).argmax(axis=1).tolist()
        again = classify(server.url, token, x[:3]).json()["answers"]
        assert [a["reason"] for a in again] == ["repeat"] * 3  # the defense is in front
        metrics = httpx.get(f"{server.url}/metrics", headers=auth(token)).text
        info = re.search(r"^movingtarget_model_info\{(.*)\} 1\.0$", metrics, re.M)
        assert info is not None and f'sha256="{digest}"' in info.group(1), metrics
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(lines) == 43 and {row["model_sha256"] for row in lines} == {digest}


def test_kserve_metadata_reports_the_graphs_own_input(
    files: dict[str, Any], gateway_env: dict[str, str], tmp_path: Path
) -> None:
    """A graph whose input is named and shaped its own way: the metadata says so, and an
    Open Inference Protocol request built from it is answered."""
    import torch

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    path = tmp_path / "image.onnx"
    with pytest.warns(DeprecationWarning):  # the TorchScript-based exporter, offline
        torch.onnx.export(
            net,
            (torch.zeros(1, 1, 8, 8),),
            str(path),
            dynamo=False,
            input_names=["pixels"],
            output_names=["scores"],
            dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}},
        )
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    token = new_key(keys, "tester", rate=0)
    with GatewayServer(
        "--model", str(path), "--keys-db", keys, env=gateway_env, log=tmp_path / "log"
    ) as server:
        meta = httpx.get(f"{server.url}/v2/models/image", headers=auth(token)).json()
        tensor = meta["inputs"][0]
        assert tensor == {"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
        x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
        body = {"inputs": [{**tensor, "shape": [2, 1, 8, 8], "data": x.ravel().tolist()}]}
        r = httpx.post(f"{server.url}/v2/models/image/infer", json=body, headers=auth(token))
        assert r.status_code == 200, r.text
        want = net(torch.from_numpy(x)).argmax(dim=1).tolist()
        assert r.json()["outputs"][0]["data"] == want


def serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOVINGTARGET_KEYS": f"sqlite:///{cwd / 'keys.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "movingtarget", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_bad_model_files_stop_serve_with_one_line(files: dict[str, Any], tmp_path: Path) -> None:
    paths = files["paths"]
    cases = [
        ([str(paths["lr.pkl"])], "a pickle runs any code it holds when loaded"),
        ([str(paths["m.pt2"])], "a torch.export program is read with pickle"),
        (
            [str(paths["mlp.skops"])],
            "holds types that are not trusted: sklearn.neural_network._stochastic_optimizers",
        ),
        ([str(paths["corrupt.onnx"])], "corrupt.onnx: not a valid ONNX model"),
        ([str(paths["m.pt"]), "--input-shape", "1,28,28"], "the program fails on an input of"),
        ([str(paths["lr.onnx"]), "--input-shape", "8,8"], "does not match the graph's input"),
        ([str(paths["lr.onnx"]), "--model-output", "probs"], "output must be one of auto"),
    ]
    for args, message in cases:
        p = serve("--model", *args, cwd=tmp_path)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, p.stderr
        assert lines[0].startswith("error: --model "), p.stderr
        assert message in lines[0] and "Traceback" not in p.stderr, p.stderr
