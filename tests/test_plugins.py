"""Plugins (entry points) and ``module:attribute`` factories, as a user installs and
names them: the example plugin package is installed in the test venv by scripts/test.sh."""

from __future__ import annotations

import json
import subprocess
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from cli_process import run_cli
from movingtarget.errors import ConfigError
from movingtarget.registry import Registry, import_object

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "movingtarget-example-plugin"
DIST = "movingtarget-example-plugin"


def cli(*args: str, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": "400"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return run_cli(*args, cwd=cwd, env=env)


@pytest.fixture(scope="module", autouse=True)
def example_installed() -> None:
    try:
        metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        pytest.fail(f"the example plugin is not installed: pip install -e {EXAMPLE}")


def test_list_shows_the_plugin_and_what_it_provided(tmp_path: Path) -> None:
    p = cli("list", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"example-repeat-one [{DIST}]" in p.stdout
    assert f"example-low-margin [{DIST}]" in p.stdout
    assert f"example-margin-abstain [{DIST}]: argmax > example-low-margin(margin=0.2)" in p.stdout
    assert "test-set [" not in p.stdout  # built-in names carry no origin
    assert p.stderr == ""


def test_the_plugins_attack_and_mechanism_run_in_an_experiment(tmp_path: Path) -> None:
    config = (EXAMPLE / "example.toml").read_text().replace("seeds = [0, 1]", "seeds = [0]")
    (tmp_path / "example.toml").write_text(config)
    p = cli("run", "example.toml", "--out", "res", "--workers", "1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = {
        (r["attack"], r["defense"]): r
        for r in json.loads((tmp_path / "res/summary.json").read_text())
    }
    assert len(rows) == 2 * 3
    # one input sent 100 times: a fixed model answers it the same every time ...
    assert rows[("example-repeat-one", "deterministic")]["r_tilde"] in (0.0, 1.0)
    # ... exact memory answers it once and refuses the 99 repeats
    assert rows[("example-repeat-one", "memorize-abstain")]["abstain_adversarial"] == 0.99
    # the plugin's mechanism refuses close calls: benign users see it abstain
    margin = rows[("test-set", "example-margin-abstain")]
    assert (
        margin["abstain_benign"] > 0 and rows[("test-set", "deterministic")]["abstain_benign"] == 0
    )


def _fake_distribution(root: Path, name: str, entry_points: str) -> None:
    """An installed distribution as importlib.metadata finds one: a .dist-info folder."""
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_a_broken_plugin_is_one_line_and_the_others_still_load(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _fake_distribution(
        site,
        "broken-plugin",
        """\
        [movingtarget.attacks]
        broken-attack = no_such_module_for_this_test:Attack
        [movingtarget.defenses]
        not-text = json:loads
        """,
    )
    p = cli("list", cwd=tmp_path, pythonpath=site)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2, p.stderr
    assert any(
        "plugin broken-plugin: movingtarget.attacks entry point 'broken-attack'" in line
        and "No module named 'no_such_module_for_this_test'" in line
        for line in lines
    ), p.stderr
    assert any("'not-text' is a function, not the text of a composition" in x for x in lines)
    assert "Traceback" not in p.stderr
    assert f"example-repeat-one [{DIST}]" in p.stdout  # the good plugin still loaded
    assert "broken plugins" in p.stdout


# ------------------------------------------------------------- module:attribute factories


def _user_package(root: Path) -> Path:
    pkg = root / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(
        textwrap.dedent(
            """\
            from sklearn.neighbors import KNeighborsClassifier
            from movingtarget.models import SklearnModel

            def build(split, *, seed=0, k=3):
                x = split.x_train.reshape(len(split.x_train), -1)
                return SklearnModel(KNeighborsClassifier(k).fit(x, split.y_train), split.n_classes)

            def not_a_model(split, *, seed=0):
                return "nope"
            """
        )
    )
    (pkg / "data.py").write_text(
        textwrap.dedent(
            """\
            import numpy as np
            from movingtarget.datasets import Dataset

            def blobs(*, n=1000, seed=0):
                # ten classes, as the hello-world config's targeted attacker wants class 8
                rng = np.random.default_rng(seed)
                y = np.arange(n) % 10
                x = (rng.normal(size=(n, 4)) + 2 * y[:, None]).astype(np.float32)
                return Dataset("blobs", x, y)
            """
        )
    )
    return root


SMALL = ["--seeds", "1", "--queries", "40", "--workers", "1", "--set", "then=[]"]


def test_a_users_model_and_dataset_factories_run(tmp_path: Path) -> None:
    root = _user_package(tmp_path / "src")
    p = cli(
        "run", *SMALL, "--set", "model.factory=mypkg.models:build", "--set", "model.k=5",
        "--set", "dataset.factory=mypkg.data:blobs", "--out", "res",
        cwd=tmp_path, pythonpath=root,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "res/summary.json").read_text())
    assert len(rows) == 4 * 5
    experiment = json.loads((tmp_path / "res/experiment.json").read_text())
    text = json.dumps(experiment)
    assert "mypkg.models:build" in text and "mypkg.data:blobs" in text
    # never cached: the user's code may change under the same name
    assert not list((tmp_path / ".mt-cache").glob("*mypkg*"))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("model.factory=mypkg.nothing:build", "cannot import module 'mypkg.nothing'"),
        ("model.factory=mypkg.models:missing", "module 'mypkg.models' has no 'missing'"),
        ("model.factory=mypkg.models:not_a_model", "returned str, not a model"),
        ("model.factory=build", "write module:attribute"),
    ],
)
def test_bad_factories_are_one_line(tmp_path: Path, setting: str, message: str) -> None:
    root = _user_package(tmp_path / "src")
    p = cli("run", *SMALL, "--set", setting, "--out", "res", cwd=tmp_path, pythonpath=root)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_registry_imports_module_attribute_names() -> None:
    reg: Registry[object] = Registry("thing")
    assert reg.get("json:dumps") is import_object("json:dumps", "x")
    with pytest.raises(ConfigError, match="is a int, not a function"):
        reg.get("sys:maxsize")
    with pytest.raises(ConfigError, match="unknown thing 'nothing'"):
        reg.get("nothing")
