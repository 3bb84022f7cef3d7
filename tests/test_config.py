"""Experiment configs: shipped ones load, every bad field gets one clear message."""

from __future__ import annotations

import math

import pytest

from movingtarget import ConfigError
from movingtarget.datasets import load_dataset
from movingtarget.experiment import (
    BUILTIN_CONFIGS,
    apply_overrides,
    load_config,
    parse_config,
    run_experiment,
)
from movingtarget.experiment import runner as runner_module
from movingtarget.experiment.runner import make_pools

BASE = {"defenses": ["deterministic"], "attacks": ["test-set"]}


@pytest.mark.parametrize("name", BUILTIN_CONFIGS)
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.defenses and cfg.attacks and cfg.seeds


def test_hello_world_is_the_default() -> None:
    cfg = load_config()
    assert cfg.dataset.name == "digits"
    assert cfg.arena.queries == 400
    assert len(cfg.seeds) == 20
    assert [d.name for d in cfg.defenses] == [
        "deterministic",
        "stochastic",
        "threshold-abstain-0.6",
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


def _shipped(name: str, overrides: list[str] | None = None):  # type: ignore[no-untyped-def]
    return load_config(name, overrides)  # spambase: the copy inside the package


@pytest.mark.parametrize("name", BUILTIN_CONFIGS)
def test_shipped_configs_fit_their_benign_pool(name: str) -> None:
    # benign users re-send only the configured duplicates: no shipped config cycles
    cfg = _shipped(name)
    assert not cfg.arena.benign_repeats
    split = load_dataset(cfg.dataset.name, **cfg.dataset.params).split(
        test_size=cfg.test_size, seed=cfg.split_seed
    )
    pools = make_pools(split.x_test, split.y_test, cfg.pools, cfg.split_seed)
    assert cfg.arena.benign_queries() <= len(pools.benign_y)
    cfg.arena.check_benign_pool(len(pools.benign_y))


def test_benign_repeats_is_read_and_type_checked() -> None:
    assert not parse_config(dict(BASE)).arena.benign_repeats
    assert parse_config({**BASE, "arena": {"benign_repeats": True}}).arena.benign_repeats
    with pytest.raises(ConfigError, match=r"arena\.benign_repeats must be true or false, got 1"):
        parse_config({**BASE, "arena": {"benign_repeats": 1}})


def test_run_refuses_an_exhausted_benign_pool_before_training(monkeypatch) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was trained before the benign pool was checked")

    monkeypatch.setattr(runner_module, "build_model", no_training)
    # hello-world with the default test_size 0.3: a benign pool of 267 digits
    cfg = load_config("hello-world", ["test_size=0.3", "seeds=1"])
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, workers=1)
    assert "400 benign queries (queries 400 x benign_ratio 1)" in str(err.value)
    assert "holds 267 items" in str(err.value)


def test_memorization_refuses_only_the_legitimate_duplicates() -> None:
    # synthetic with exact memorization: benign abstention comes from the 5 % exact
    # duplicates alone (before, 400 benign queries cycled a pool of 270: 35 % refused)
    cfg = _shipped(
        "synthetic", ["seeds=1", 'defenses=["memorize-abstain"]', 'attacks=["test-set"]']
    )
    n = cfg.arena.benign_queries()
    share = cfg.arena.duplicate_share
    (run,) = run_experiment(cfg, workers=1).runs
    # the first benign query cannot be a duplicate; each later one is with chance `share`
    # (and is then refused): the refused count is Binomial(n - 1, share); 4 standard errors
    expected = (n - 1) * share / n
    tolerance = 4 * math.sqrt((n - 1) * share * (1 - share)) / n
    assert abs(run["abstain_benign"] - expected) <= tolerance, (run["abstain_benign"], expected)


def test_a_registered_name_means_one_composition() -> None:
    other = {"name": "threshold-abstain", "mechanisms": "argmax > threshold(min_confidence=0.6)"}
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "defenses": ["deterministic", other]})
    text = str(err.value)
    assert text.startswith("defenses[1]: 'threshold-abstain' is the registered composition")
    assert "'argmax > threshold(min_confidence=0.9)'" in text  # the registered one
    assert "'argmax > threshold(min_confidence=0.6)'" in text  # the one given
    assert "its own name" in text
    # tables are compared by what they build too
    table = [{"type": "memorize", "on_repeat": "random"}, {"type": "argmax"}]
    with pytest.raises(ConfigError, match="'memorize-abstain' is the registered composition"):
        parse_config({**BASE, "defenses": [{"name": "memorize-abstain", "mechanisms": table}]})


@pytest.mark.parametrize(
    ("name", "mechanisms"),
    [
        ("threshold-abstain", "argmax >   threshold( min_confidence = 0.9 )"),
        ("threshold-abstain", "argmax > threshold"),  # 0.9 is the default
        ("stochastic", [{"type": "sample", "temperature": 1.0}]),
        ("memorize-abstain", "memorize > argmax"),  # on_repeat=abstain is the default
    ],
)
def test_restating_a_registered_composition_is_fine(name: str, mechanisms: object) -> None:
    cfg = parse_config({**BASE, "defenses": [{"name": name, "mechanisms": mechanisms}]})
    assert cfg.defenses[0].name == name
