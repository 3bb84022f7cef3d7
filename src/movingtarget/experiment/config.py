"""Experiment configs: TOML files naming dataset, model, defenses, adversaries, ``m``, seeds.

Every field is checked when the file is read; a bad one gets one
:class:`~movingtarget.errors.ConfigError` that names it.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from movingtarget.arena.arena import ArenaConfig
from movingtarget.errors import ConfigError
from movingtarget.registry import is_import_path

#: Configs shipped with the package, by name.
BUILTIN_CONFIGS = (
    "hello-world",
    "spambase",
    "synthetic",
    "arms-race",
    "arms-race-fashion",
    "stateful",
    "dynamic",
    "dynamic-spambase",
    "dynamic-fashion",
    "thesis",
)


@dataclass(frozen=True)
class ComponentSpec:
    """A registered component by name, with its own parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def display(self) -> str:
        """The name reports use (``label`` when given)."""
        return self.label or self.name


@dataclass(frozen=True)
class DefenseSpec:
    """A defense: a named composition, or mechanisms given in the config."""

    name: str
    mechanisms: str | list[dict[str, Any]] | None = None
    #: Gated online updates of the model from the oracle's labels (``tolerance``,
    #: ``steps``, ``canary``: held-out benign items the gate measures; ``ask_on``).
    update: dict[str, Any] | None = None

    @property
    def spec(self) -> str | list[dict[str, Any]]:
        """What :func:`~movingtarget.defenses.build_defense` takes."""
        return self.mechanisms if self.mechanisms is not None else self.name


AUTO = "auto"


@dataclass(frozen=True)
class ResilienceConfig:
    """The ``[resilience]`` table of a config.

    Parameters
    ----------
    inputs:
        Held-out inputs measured (at most the test split).
    eps_l2, eps_linf:
        The stated sizes: the report gives the share of inputs moved out of their class
        by a perturbation at most this large.
    l2_method, linf_method:
        ``auto``, ``deepfool`` (L2 only), ``fgsm``, ``pgd`` or ``hopskipjump``.
    steps:
        Bisection halvings (precision ``max_eps / 2**steps``).
    pgd_iter:
        PGD iterations per bisection step.
    seed:
        Seeds the sample of inputs.
    thresholds:
        ``min_confidence`` values of the confidence-threshold sweep (empty: no sweep).
    sweep_queries:
        Queries ``m`` of the test set attack the sweep predicts and measures at each value.
    jsma_per_class:
        Correctly classified inputs per source class sent by JSMA to every other class
        for the source × target success matrix (0: none).
    detection_inputs:
        Correctly classified inputs each attack (FGSM, PGD, DeepFool, JSMA) crafts from
        to score the centroid detector against (0: no detection table).
    detection_false_alarm:
        Benign false-alarm rate the detector's threshold is calibrated for there, in
        (0, 1).
    near_duplicate_noise:
        Half-width of the uniform noise that makes benign near-duplicates.
    compare_models:
        Registered models (e.g. the smoothing baselines ``adv-mlp``, ``noise-mlp``)
        measured beside the config's model in one table: natural ``r``, median minimal
        perturbations with their standard errors, and the test set attack's ``r~``.

    Examples
    --------
    >>> ResilienceConfig().inputs
    1000
    """

    inputs: int = 1000
    eps_l2: float = 1.0
    eps_linf: float = 0.1
    l2_method: str = AUTO
    linf_method: str = AUTO
    steps: int = 10
    pgd_iter: int = 10
    seed: int = 0
    budget: dict[str, Any] = field(default_factory=dict)
    thresholds: tuple[float, ...] = (0.0, 0.5, 0.7, 0.9, 0.95, 0.99)
    sweep_queries: int = 1000
    jsma_per_class: int = 5
    detection_inputs: int = 200
    detection_false_alarm: float = 0.05
    near_duplicate_noise: float = 0.02
    compare_models: tuple[str, ...] = ()


#: Integer fields of ``[resilience]`` where 0 is allowed (0: that part is skipped).
_MAY_BE_ZERO = ("seed", "jsma_per_class", "detection_inputs")


def _least(key: str) -> int:
    return 0 if key in _MAY_BE_ZERO else 1


def _model_names(value: object) -> tuple[str, ...]:
    from movingtarget.models import MODELS

    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"resilience.compare_models must be a list of model names, got {value!r}")
    for name in value:
        if name not in MODELS:
            raise ConfigError(
                f"resilience.compare_models: unknown model {name!r}; registered: "
                + ", ".join(sorted(MODELS))
            )
    return tuple(value)


def parse_resilience(raw: object) -> ResilienceConfig:
    """A :class:`ResilienceConfig` from the ``[resilience]`` table (absent: defaults)."""
    from movingtarget.attacks.perturb.minimal import METHODS

    if raw is None:
        return ResilienceConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"resilience must be a table, got {raw!r}")
    known = {f.name: f for f in fields(ResilienceConfig)}
    args: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown field resilience.{key!r}; known fields: {', '.join(known)}")
        default = known[key].default
        if key == "budget":
            if not isinstance(value, dict):
                raise ConfigError(f"resilience.budget must be a table, got {value!r}")
        elif key == "thresholds":
            if not isinstance(value, list) or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t < 1
                for t in value
            ):
                raise ConfigError(
                    f"resilience.thresholds must be a list of numbers in [0, 1), got {value!r}"
                )
            value = tuple(sorted(float(t) for t in value))
        elif key == "compare_models":
            value = _model_names(value)
        elif key == "detection_false_alarm" and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1
        ):
            raise ConfigError(
                f"resilience.detection_false_alarm must be a number in (0, 1), got {value!r}"
            )
        elif isinstance(default, str):
            if value not in (AUTO, *METHODS):
                raise ConfigError(
                    f"resilience.{key} must be one of auto, {', '.join(METHODS)}; got {value!r}"
                )
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"resilience.{key} must be a number, got {value!r}")
        elif isinstance(default, int) and (value != int(value) or value < _least(key)):
            raise ConfigError(
                f"resilience.{key} must be an integer >= {_least(key)}, got {value!r}"
            )
        elif isinstance(default, float) and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"resilience.{key} must be a number > 0, got {value!r}")
        args[key] = (
            int(value)
            if isinstance(default, int) and not isinstance(value, (dict, tuple))
            else value
        )
    if args.get("linf_method") == "deepfool":
        raise ConfigError("resilience.linf_method: deepfool measures L2 only")
    return ResilienceConfig(**args)


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: every attack against every defense, for every seed.

    Examples
    --------
    >>> cfg = load_config("hello-world")
    >>> cfg.dataset.name, len(cfg.defenses), len(cfg.seeds), cfg.arena.queries
    ('digits', 5, 20, 400)
    """

    name: str
    dataset: ComponentSpec
    model: ComponentSpec
    defenses: tuple[DefenseSpec, ...]
    attacks: tuple[ComponentSpec, ...]
    arena: ArenaConfig = field(default_factory=ArenaConfig)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    test_size: float = 0.3
    split_seed: int = 0
    model_seed: int = 0
    pools: str = "split"  # "split": attacker and benign pools are disjoint halves of test
    #: "order": seeds vary only the orderings over one split and its pools; "data": each
    #: seed also redraws the split (split_seed + seed), retrains the model and the pools.
    resample: str = "order"
    #: ``movingtarget resilience``: the ``[resilience]`` table.
    resilience: ResilienceConfig = field(default_factory=lambda: ResilienceConfig())
    #: Configs ``movingtarget run`` runs after this one (shipped names or paths), each
    #: into a subfolder of the results named after it, their tables in this report.
    then: tuple[str, ...] = ()


def _suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(table: dict[str, Any], allowed: list[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"unknown field {where}{key!r}{_suggest(key, allowed)}; "
                f"known fields: {', '.join(allowed)}"
            )


def _typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{where} must be {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{where} must be {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
        bool: "true or false",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _component(raw: Any, where: str, default: str | None = None) -> ComponentSpec:
    if isinstance(raw, str):
        return ComponentSpec(raw)
    if raw is None and default is not None:
        return ComponentSpec(default)
    table = _typed(raw, dict, where)
    if where in ("dataset", "model") and "factory" in table:
        # a user's own function, module:attribute; it takes the table's other parameters
        factory = _typed(table["factory"], str, f"{where}.factory")
        if not is_import_path(factory):
            raise ConfigError(
                f"{where}.factory {factory!r}: write module:attribute, e.g. mypkg.{where}s:build"
            )
        table = {k: v for k, v in table.items() if k not in ("factory", "name")}
        table["name"] = factory
    name = table.get("name", default)
    if name is None:
        raise ConfigError(f"{where} needs a 'name'")
    _typed(name, str, f"{where}.name")
    label = _typed(table.get("label", ""), str, f"{where}.label")
    params = {k: v for k, v in table.items() if k not in ("name", "label")}
    return ComponentSpec(name, params, label)


def _check_registered_name(name: str, mechanisms: Any, where: str) -> None:
    """A registered composition's name given other mechanisms is refused: one name must
    not mean two compositions in reports (restating the same composition is fine)."""
    from movingtarget.defenses import COMPOSITIONS, composition_text, normalized_composition

    if name not in COMPOSITIONS:
        return
    if normalized_composition(mechanisms) == normalized_composition(name):
        return
    raise ConfigError(
        f"{where}: {name!r} is the registered composition '{COMPOSITIONS[name]}', but these "
        f"mechanisms build '{composition_text(mechanisms)}'; give this defense its own name "
        f'(e.g. name = "{name}-custom")'
    )


def _grid_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def expand_grid(raw: Any, where: str) -> list[Any]:
    """An attack table with ``grid = {param = [v1, v2, ...], ...}`` becomes one attack per
    combination of the listed values, labelled ``label(param=v, ...)``; others pass as is.

    >>> [a["label"] for a in expand_grid({"name": "a", "grid": {"eps": [0.5, 1]}}, "x")]
    ['a(eps=0.5)', 'a(eps=1)']
    """
    if not isinstance(raw, dict) or "grid" not in raw:
        return [raw]
    grid = _typed(raw["grid"], dict, f"{where}.grid")
    if not grid:
        raise ConfigError(f"{where}.grid is empty")
    combos: list[dict[str, Any]] = [{}]
    for key, values in grid.items():
        items = _typed(values, list, f"{where}.grid.{key}")
        if not items:
            raise ConfigError(f"{where}.grid.{key} is empty")
        combos = [{**c, key: v} for c in combos for v in items]
    base = {k: v for k, v in raw.items() if k != "grid"}
    stem = str(base.get("label") or base.get("name", "attack"))
    out = []
    for combo in combos:
        text = ", ".join(f"{k}={_grid_value(v)}" for k, v in combo.items())
        out.append({**base, **combo, "label": f"{stem}({text})"})
    return out


def parse_config(raw: dict[str, Any], *, source: str = "config") -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a parsed TOML table."""
    top = [
        "name",
        "dataset",
        "model",
        "defenses",
        "attacks",
        "arena",
        "seeds",
        "test_size",
        "split_seed",
        "model_seed",
        "pools",
        "resample",
        "resilience",
        "then",
    ]
    _check_keys(raw, top, "")
    name = _typed(raw.get("name", Path(source).stem), str, "name")
    dataset = _component(raw.get("dataset"), "dataset", default="digits")
    model = _component(raw.get("model"), "model", default="logistic")

    defenses_raw = raw.get("defenses")
    if defenses_raw is None:
        raise ConfigError("config needs 'defenses' (a list of composition names or tables)")
    defenses = []
    for i, d in enumerate(_typed(defenses_raw, list, "defenses")):
        where = f"defenses[{i}]"
        if isinstance(d, str):
            defenses.append(DefenseSpec(d))
            continue
        table = _typed(d, dict, where)
        _check_keys(table, ["name", "mechanisms", "update"], f"{where}.")
        dname = _typed(table.get("name"), str, f"{where}.name")
        mech = table.get("mechanisms")
        if mech is not None:
            _typed(mech, (str, list), f"{where}.mechanisms")
            _check_registered_name(dname, mech, where)
        update = _update(table["update"], f"{where}.update") if "update" in table else None
        defenses.append(DefenseSpec(dname, mech, update))
    if not defenses:
        raise ConfigError("'defenses' is empty")
    names = [d.name for d in defenses]
    if len(set(names)) != len(names):
        raise ConfigError(f"defense names must be unique, got {names}")

    attacks_raw = raw.get("attacks")
    if attacks_raw is None:
        raise ConfigError("config needs 'attacks' (a list of attack names or tables)")
    attacks = tuple(
        _component(g, f"attacks[{i}]")
        for i, a in enumerate(_typed(attacks_raw, list, "attacks"))
        for g in expand_grid(a, f"attacks[{i}]")
    )
    if not attacks:
        raise ConfigError("'attacks' is empty")
    labels = [a.display for a in attacks]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"attacks need distinct labels (add label = ...), got {labels}")

    arena_raw = _typed(raw.get("arena", {}), dict, "arena")
    arena_fields = {f.name: f.type for f in fields(ArenaConfig)}
    _check_keys(arena_raw, list(arena_fields), "arena.")
    arena_args: dict[str, Any] = {}
    for key, value in arena_raw.items():
        if str(arena_fields[key]).startswith("tuple"):  # a list of names, e.g. transforms
            items = _typed(value, list, f"arena.{key}")
            arena_args[key] = tuple(_typed(v, str, f"arena.{key}[]") for v in items)
            continue
        kinds: dict[Any, type | tuple[type, ...]] = {"float": (int, float), "bool": bool}
        kind = kinds.get(arena_fields[key], int)
        arena_args[key] = _typed(value, kind, f"arena.{key}")
    arena = ArenaConfig(**arena_args)

    seeds_raw = raw.get("seeds", 5)
    if isinstance(seeds_raw, list):
        seeds = tuple(_typed(s, int, "seeds[]") for s in seeds_raw)
    else:
        count = _typed(seeds_raw, int, "seeds")
        if count < 1:
            raise ConfigError(f"seeds must be >= 1, got {count}")
        seeds = tuple(range(count))
    if not seeds:
        raise ConfigError("seeds is empty")
    test_size = float(_typed(raw.get("test_size", 0.3), (int, float), "test_size"))
    if not 0 < test_size < 1:
        raise ConfigError(f"test_size must be in (0, 1), got {test_size}")
    pools = _typed(raw.get("pools", "split"), str, "pools")
    if pools not in ("split", "shared"):
        raise ConfigError(f"pools must be 'split' or 'shared', got {pools!r}")
    resample = _typed(raw.get("resample", "order"), str, "resample")
    if resample not in ("order", "data"):
        raise ConfigError(f"resample must be 'order' or 'data', got {resample!r}")
    return ExperimentConfig(
        name=name,
        dataset=dataset,
        model=model,
        defenses=tuple(defenses),
        attacks=attacks,
        arena=arena,
        seeds=seeds,
        test_size=test_size,
        split_seed=_typed(raw.get("split_seed", 0), int, "split_seed"),
        model_seed=_typed(raw.get("model_seed", 0), int, "model_seed"),
        pools=pools,
        resample=resample,
        resilience=parse_resilience(raw.get("resilience")),
        then=_then(raw.get("then", []), source),
    )


UPDATE_FIELDS = ["tolerance", "steps", "canary", "ask_on"]


def _update(value: Any, where: str) -> dict[str, Any]:
    """A defense's ``update`` table, checked now (the gate itself is built per
    deployment, on that deployment's canary items)."""
    from movingtarget.defenses import GatedUpdate

    table = dict(_typed(value, dict, where))
    _check_keys(table, UPDATE_FIELDS, f"{where}.")
    canary = table.setdefault("canary", 200)
    if isinstance(canary, bool) or not isinstance(canary, int) or canary < 1:
        raise ConfigError(f"{where}.canary must be an integer >= 1, got {canary!r}")
    if "tolerance" in table:
        _typed(table["tolerance"], (int, float), f"{where}.tolerance")
    try:  # the gate's own checks, on a stand-in canary
        GatedUpdate(
            np.zeros((1, 1), np.float32),
            [0],
            **{k: v for k, v in table.items() if k != "canary"},
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {str(exc).removeprefix('update: ')}") from None
    return table


def _then(value: Any, source: str) -> tuple[str, ...]:
    """The ``then`` list: shipped config names, or files (relative to this config's)."""
    out = []
    base = Path(source).parent if Path(source).is_file() else Path(".")
    for i, item in enumerate(_typed(value, list, "then")):
        name = _typed(item, str, f"then[{i}]")
        if name not in BUILTIN_CONFIGS:
            path = Path(name) if Path(name).is_absolute() else base / name
            if not path.is_file():
                raise ConfigError(
                    f"then[{i}]: config {name!r} does not exist (shipped configs: "
                    f"{', '.join(BUILTIN_CONFIGS)})"
                )
            name = str(path)
        out.append(name)
    return tuple(out)


_PATH_KEYS = ("path", "root", "images", "labels", "directory")


def load_raw(path_or_name: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """The parsed TOML table of a config file or shipped config, and its source name.

    Relative dataset paths in a config file are taken relative to that file.
    """
    if path_or_name is None:
        path_or_name = "hello-world"
    source = str(path_or_name)
    base: Path | None = None
    if isinstance(path_or_name, str) and path_or_name in BUILTIN_CONFIGS:
        text = resources.files("movingtarget.configs").joinpath(f"{path_or_name}.toml").read_text()
    else:
        path = Path(path_or_name)
        if not path.is_file():
            raise ConfigError(
                f"config {path} does not exist (shipped configs: {', '.join(BUILTIN_CONFIGS)})"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        base = path.resolve().parent
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {source} is not valid TOML: {exc}") from None
    # a config's own paths (a dataset's files, a model file) are relative to the config
    for table in (raw.get("dataset"), raw.get("model")):
        if base is None or not isinstance(table, dict):
            continue
        for key in _PATH_KEYS:
            value = table.get(key)
            if isinstance(value, str) and not Path(value).is_absolute():
                table[key] = str(base / value)
    return raw, source


def apply_overrides(raw: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides (``arena.queries=1000``, ``dataset.path=x.csv``).

    Values are read as TOML values when they parse (numbers, booleans, lists), else as text.
    """
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. arena.queries=1000")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: the key is empty")
        try:
            value: Any = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a table")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(
    path_or_name: str | Path | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Read a TOML config file, or a shipped one by name (default: ``hello-world``)."""
    raw, source = load_raw(path_or_name)
    return parse_config(apply_overrides(raw, overrides or []), source=source)
