"""Model files: each format round-trips a reference model with the same answers, on
digits and Fashion-MNIST; bad files get one clear message; `run` takes each format."""

from __future__ import annotations

import json
import pickle
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli_process import run_cli
from movingtarget.datasets import Split, load_dataset
from movingtarget.errors import ConfigError, DataError, InputError
from movingtarget.models import Model, build_model, check_model, load_model_file
from movingtarget.models.export import export_model
from movingtarget.models.files import file_info, file_sha256

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

ADAM = "sklearn.neural_network._stochastic_optimizers.AdamOptimizer"

#: Small settings: each model trains in a second or two.
PARAMS: dict[str, dict[str, Any]] = {
    "logistic": {},
    "mlp": {"max_iter": 20},
    "torch-mlp": {"epochs": 3},
    "cnn": {"epochs": 1, "channels": (4, 8), "batch_size": 64},
}

#: (dataset, model, suffix): every format each kind of reference model is written as.
CASES = [
    (ds, name, suffix)
    for ds, names in (
        ("digits", ("logistic", "mlp", "torch-mlp")),
        ("fashion", ("logistic", "cnn")),
    )
    for name in names
    for suffix in ((".onnx", ".skops") if name in ("logistic", "mlp") else (".onnx", ".pt", ".pt2"))
]


@pytest.fixture(scope="module")
def splits() -> dict[str, Split]:
    return {
        "digits": load_dataset("digits").split(test_size=0.3, seed=0),
        "fashion": load_dataset("fashion-mnist", part="test", limit=1500).split(
            test_size=0.3, seed=0
        ),
    }


@pytest.fixture(scope="module")
def trained(
    splits: dict[str, Split], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], Model]:
    cache = tmp_path_factory.mktemp("cache")
    return {
        (ds, name): build_model(name, splits[ds], cache_dir=cache, **PARAMS[name])
        for ds, name, _ in CASES
    }


def _load(path: Path, split: Split) -> Model:
    return load_model_file(
        path,
        n_classes=split.n_classes,
        input_shape=split.input_shape if path.suffix == ".pt" else None,
        trust=path.suffix == ".pt2",
        trusted_types=[ADAM],
        device="cpu",
    )


@pytest.mark.parametrize(("ds", "name", "suffix"), CASES)
def test_each_format_round_trips_a_reference_model(
    ds: str,
    name: str,
    suffix: str,
    splits: dict[str, Split],
    trained: dict[tuple[str, str], Model],
    tmp_path: Path,
) -> None:
    split, model = splits[ds], trained[(ds, name)]
    path = export_model(model, tmp_path / f"{ds}-{name}{suffix}", split.x_test[:4])
    again = _load(path, split)
    want = model.predict_proba(split.x_test)
    got = check_model(again, split.x_test)  # the protocol checks, on the whole test split
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    info = file_info(again)
    assert info is not None and info.sha256 == file_sha256(path)
    assert info.input_shape == split.input_shape or int(np.prod(info.input_shape)) == int(
        np.prod(split.input_shape)
    )
    # the arena asks with batches of one: those answers are the batch's too
    np.testing.assert_allclose(again.predict_proba(split.x_test[:1]), got[:1], atol=1e-6)


def test_onnx_reads_its_input_and_output_from_the_graph(
    splits: dict[str, Split], trained: dict[tuple[str, str], Model], tmp_path: Path
) -> None:
    from movingtarget.models.files.onnx import OnnxModel

    split = splits["fashion"]
    cnn = OnnxModel(export_model(trained[("fashion", "cnn")], tmp_path / "c.onnx", split.x_test))
    assert (cnn.info.input_name, cnn.info.input_shape, cnn.info.datatype) == (
        "input",
        (1, 28, 28),
        "FP32",
    )
    assert cnn.output == "logits" and cnn.n_classes == 10
    digits = splits["digits"].x_test
    lr = OnnxModel(export_model(trained[("digits", "logistic")], tmp_path / "l.onnx", digits))
    assert lr.output == "probabilities" and lr.info.datatype == "FP64"  # skl2onnx, double
    # flat rows of the same 784 values reach the image model, reshaped
    flat = split.x_test[:3].reshape(3, -1)
    np.testing.assert_array_equal(cnn.predict_proba(flat), cnn.predict_proba(split.x_test[:3]))
    with pytest.raises(InputError, match=r"takes inputs of shape \(1, 28, 28\) \(784 values"):
        cnn.predict_proba(np.zeros((2, 64), np.float32))
    # pickles (the runner's workers) and rebuilds its session
    again = pickle.loads(pickle.dumps(cnn))
    np.testing.assert_array_equal(again.predict_proba(flat), cnn.predict_proba(flat))


def _graph(tmp_path: Path, *, softmax_then_identity: bool, name: str = "out") -> Path:
    """A tiny hand-made ONNX graph: x (n, 3) -> MatMul -> [Softmax -> Identity] -> out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(3, dtype=np.float32) * 2.0, "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z" if softmax_then_identity else name])]
    if softmax_then_identity:
        nodes += [
            helper.make_node("Softmax", ["z"], ["p"], axis=1),
            helper.make_node("Identity", ["p"], [name]),
        ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / f"{name}-{softmax_then_identity}.onnx"
    onnx.save(model, str(path))
    return path


def test_logits_or_probabilities_wrongly_read_is_one_clear_error(tmp_path: Path) -> None:
    from movingtarget.models.files.onnx import OnnxModel

    x = np.array([[1.0, 0.0, 0.0], [0.0, 3.0, 1.0]], np.float32)
    # probabilities behind an Identity, under a plain name: the graph does not say
    probs = _graph(tmp_path, softmax_then_identity=True)
    with pytest.raises(ConfigError, match=r"looks like probabilities.*output = 'probabilities'"):
        OnnxModel(probs)
    stated = OnnxModel(probs, output="probabilities")
    z = np.exp(2 * x)
    np.testing.assert_allclose(stated.predict_proba(x), z / z.sum(1, keepdims=True), atol=1e-6)
    # logits said to be probabilities: refused on the first batch, not silently used
    logits = _graph(tmp_path, softmax_then_identity=False)
    with pytest.raises(DataError, match=r"is not probabilities.*output = 'logits'"):
        OnnxModel(logits, output="probabilities").predict_proba(x)
    np.testing.assert_allclose(OnnxModel(logits).predict_proba(x), z / z.sum(1, keepdims=True))


def test_bad_model_files_each_get_one_message(
    splits: dict[str, Split], trained: dict[tuple[str, str], Model], tmp_path: Path
) -> None:
    split = splits["digits"]
    lr = trained[("digits", "logistic")]
    onnx_path = export_model(lr, tmp_path / "lr.onnx", split.x_test)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(onnx_path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"corrupt.onnx: not a valid ONNX model"):
        load_model_file(corrupt)
    pkl = tmp_path / "lr.pkl"
    pkl.write_bytes(pickle.dumps(lr))
    with pytest.raises(ConfigError, match=r"a pickle runs any code.*trust = true"):
        load_model_file(pkl)
    with pytest.warns(UserWarning, match="loading a pickle"):
        trusted = load_model_file(pkl, trust=True)
    np.testing.assert_array_equal(
        trusted.predict_proba(split.x_test), lr.predict_proba(split.x_test)
    )
    skops_path = export_model(trained[("digits", "mlp")], tmp_path / "mlp.skops", split.x_test)
    with pytest.raises(DataError, match=f"not trusted: {ADAM}; .*trusted_types"):
        load_model_file(skops_path)
    with pytest.raises(DataError, match="not a skops file"):
        load_model_file(corrupt.rename(tmp_path / "corrupt.skops"))
    pt2 = export_model(trained[("digits", "torch-mlp")], tmp_path / "m.pt2", split.x_test)
    with pytest.raises(ConfigError, match=r"read with pickle.*trust = true"):
        load_model_file(pt2, n_classes=10)
    with pytest.raises(DataError, match="not a TorchScript program"):
        load_model_file(pkl.rename(tmp_path / "lr.pt"), n_classes=10, input_shape=(64,))
    import onnx
    from onnx import TensorProto, helper

    x, y = ([helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 3])] for n in "xy")
    fancy = helper.make_graph([helper.make_node("FancyOp", ["x"], ["y"], domain="x.y")], "g", x, y)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("x.y", 1)]
    graph = helper.make_model(fancy, opset_imports=opsets)
    graph.ir_version = 8
    onnx.save(graph, str(tmp_path / "fancy.onnx"))
    with pytest.raises(DataError, match=r"does not support an operator of this graph.*FancyOp"):
        load_model_file(tmp_path / "fancy.onnx")
    with pytest.raises(ConfigError, match=r"unknown model file type '\.h5'"):
        load_model_file(tmp_path / "m.h5")
    cancer = load_dataset("breast-cancer").split(seed=0)
    with pytest.raises(ConfigError, match=r"takes inputs of shape \(64,\).*'breast-cancer'"):
        build_model("file", cancer, path=str(onnx_path))


def test_art_gets_gradients_from_torchscript_and_scores_from_onnx(
    splits: dict[str, Split], trained: dict[tuple[str, str], Model], tmp_path: Path
) -> None:
    from movingtarget.attacks.perturb.estimators import GRADIENTS, wrap_model

    split, net = splits["digits"], trained[("digits", "torch-mlp")]
    script = _load(export_model(net, tmp_path / "m.pt", split.x_test), split)
    est = wrap_model(script, clip_values=(0.0, 1.0))
    assert est.gives(GRADIENTS) and "gradients through PyTorch" in est.source
    grad = est.art.class_gradient(split.x_test[:2], label=0)
    assert np.abs(grad).sum() > 0
    onnx_model = _load(export_model(net, tmp_path / "m.onnx", split.x_test), split)
    black = wrap_model(onnx_model, clip_values=(0.0, 1.0))
    assert not black.gives(GRADIENTS) and "no gradients: ART's black-box" in black.source
    np.testing.assert_array_equal(
        black.predict_labels(split.x_test), est.predict_labels(split.x_test)
    )


# ------------------------------------------------------------------ the command line


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd)


SMALL = [
    "--seeds",
    "1",
    "--queries",
    "30",
    "--workers",
    "1",
    "--set",
    "then=[]",
    "--set",
    'defenses=["memorize-abstain"]',
    "--set",
    'attacks=["test-set"]',
]


def _hello_world_model(tmp_path: Path, name: str) -> tuple[Model, Split]:
    """The model `run` trains for the hello-world config, from the CLI's own cache."""
    from movingtarget.experiment import load_config

    cfg = load_config("hello-world")
    split = load_dataset(cfg.dataset.name).split(test_size=cfg.test_size, seed=cfg.split_seed)
    model = build_model(name, split, seed=cfg.model_seed, cache_dir=tmp_path / ".mt-cache")
    return model, split


@pytest.mark.slow
def test_export_then_run_each_format_from_the_command_line(tmp_path: Path) -> None:
    """`export` writes the hello-world model (and torch-mlp); `run` with each format of
    the file gives the very r~ of the native model, row by row."""
    native = cli("run", *SMALL, "--out", str(tmp_path / "native"), cwd=tmp_path)
    assert native.returncode == 0, native.stderr
    want = [r["r_tilde"] for r in json.loads((tmp_path / "native" / "summary.json").read_text())]
    for name, model in (("lr.onnx", "logistic"), ("m.pt", "torch-mlp")):
        p = cli("export", "--out", name, "--set", f"model.name={model}", cwd=tmp_path)
        assert p.returncode == 0 and "same argmax on all" in p.stdout, p.stderr
    lr, split = _hello_world_model(tmp_path, "logistic")
    export_model(lr, tmp_path / "lr.skops", split.x_test)
    (tmp_path / "lr.pkl").write_bytes(pickle.dumps(lr))
    net, _ = _hello_world_model(tmp_path, "torch-mlp")
    export_model(net, tmp_path / "m.onnx", split.x_test)
    export_model(net, tmp_path / "m.pt2", split.x_test)
    torch_rows = None
    for name in ("lr.onnx", "lr.skops", "lr.pkl", "m.pt", "m.onnx", "m.pt2"):
        trust = ["--set", "model.trust=true"] if name.endswith((".pkl", ".pt2")) else []
        out = tmp_path / name.replace(".", "-")
        p = cli(
            "run", *SMALL, "--set", "model.name=file", "--set", f"model.path={name}", *trust,
            "--out", str(out), cwd=tmp_path,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        rows = [r["r_tilde"] for r in json.loads((out / "summary.json").read_text())]
        if name.startswith("lr"):
            assert rows == want, name
        else:  # the torch program in three formats: one model, the same rows
            assert torch_rows is None or rows == torch_rows, name
            torch_rows = rows


def test_bad_model_files_from_the_command_line_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07not an onnx graph")
    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"model": None}))
    cases = {
        "corrupt.onnx": "corrupt.onnx: not a valid ONNX model",
        "m.pkl": "m.pkl: a pickle runs any code it holds when loaded",
        "missing.onnx": "missing.onnx: no such model file",
    }
    for name, message in cases.items():
        p = cli(
            "run", *SMALL, "--set", "model.name=file", "--set", f"model.path={name}",
            "--out", str(tmp_path / "res"), cwd=tmp_path,
        )  # fmt: skip
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_resilience_says_how_attacks_reach_a_model_file(tmp_path: Path) -> None:
    lr, split = _hello_world_model(tmp_path, "logistic")
    export_model(lr, tmp_path / "lr.onnx", split.x_test)
    p = cli(
        "resilience", "--inputs", "4", "--set", "model.name=file", "--set", "model.path=lr.onnx",
        "--out", "res", cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    black_box = "attacks through onnx file lr.onnx (no gradients: ART's black-box estimator"
    assert black_box in p.stdout.splitlines()[0]
    report = json.loads((tmp_path / "res" / "resilience.json").read_text())
    assert report["methods"] == {"2": "hopskipjump", "inf": "hopskipjump"}
    assert report["estimator"].startswith("onnx file lr.onnx (no gradients")
