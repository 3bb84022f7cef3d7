"""Experiment configs: shipped ones load, every bad field gets one clear message."""

from __future__ import annotations

import pytest

from movingtarget import ConfigError
from movingtarget.experiment import BUILTIN_CONFIGS, apply_overrides, load_config, parse_config

BASE = {"defenses": ["deterministic"], "attacks": ["test-set"]}


@pytest.mark.parametrize("name", BUILTIN_CONFIGS)
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.defenses and cfg.attacks and cfg.seeds


def test_hello_world_is_the_default() -> None:
    cfg = load_config()
    assert cfg.dataset.name == "digits"
    assert cfg.arena.queries == 10_000
    assert len(cfg.seeds) == 5
    assert [d.name for d in cfg.defenses] == [
        "deterministic",
        "stochastic",
        "threshold-abstain",
        "memorize-abstain",
        "memorize-random",
    ]
    assert {a.name for a in cfg.attacks} == {
        "test-set",
        "test-set-targeted",
        "rate-tracking",
        "noisy-repeat",
    }


def test_overrides() -> None:
    raw = apply_overrides(dict(BASE), ["arena.queries=123", "dataset.path=x.csv", "seeds=[7, 8]"])
    cfg = parse_config(raw)
    assert cfg.arena.queries == 123
    assert cfg.dataset.params == {"path": "x.csv"}
    assert cfg.seeds == (7, 8)


def test_relative_dataset_path_is_relative_to_the_config_file(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "c.toml"
    p.write_text(
        'defenses = ["deterministic"]\nattacks = ["test-set"]\n'
        '[dataset]\nname = "csv"\npath = "data.csv"\n'
    )
    assert load_config(p).dataset.params["path"] == str(tmp_path / "sub" / "data.csv")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**BASE, "seed": 3}, "unknown field 'seed' (did you mean 'seeds'?)"),
        (
            {**BASE, "arena": {"querys": 10}},
            "unknown field arena.'querys' (did you mean 'queries'?)",
        ),
        ({**BASE, "arena": {"queries": "many"}}, "arena.queries must be an integer"),
        ({**BASE, "arena": {"queries": True}}, "arena.queries must be an integer"),
        ({**BASE, "arena": {"queries": 0}}, "queries must be >= 1"),
        ({**BASE, "seeds": 0}, "seeds must be >= 1"),
        ({**BASE, "seeds": "five"}, "seeds must be an integer"),
        ({**BASE, "test_size": 1.5}, "test_size must be in (0, 1)"),
        ({**BASE, "pools": "mixed"}, "pools must be 'split' or 'shared'"),
        ({"attacks": ["test-set"]}, "config needs 'defenses'"),
        ({"defenses": ["deterministic"]}, "config needs 'attacks'"),
        ({**BASE, "defenses": []}, "'defenses' is empty"),
        (
            {**BASE, "defenses": [{"name": "x", "mechs": "argmax"}]},
            "unknown field defenses[0].'mechs'",
        ),
        ({**BASE, "defenses": ["deterministic", "deterministic"]}, "defense names must be unique"),
        ({**BASE, "attacks": ["test-set", "test-set"]}, "attacks need distinct labels"),
        ({**BASE, "attacks": [{"target": 3}]}, "attacks[0] needs a 'name'"),
        ({**BASE, "dataset": {"name": 5}}, "dataset.name must be a string"),
        ({**BASE, "dataset": 5}, "dataset must be a table"),
    ],
)
def test_bad_configs_name_the_field(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert message in str(err.value)


def test_malformed_toml(tmp_path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("defenses = [\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(p)


def test_missing_config_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")


@pytest.mark.parametrize("item", ["noequals", "=3"])
def test_bad_override(item: str) -> None:
    with pytest.raises(ConfigError, match="--set"):
        apply_overrides({}, [item])
