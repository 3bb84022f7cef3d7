"""The defenses box: mechanisms and the named compositions built from them.

A composition is written as mechanisms joined by ``>`` in the order they run, e.g.
``memorize(on_repeat=abstain) > argmax``; the hello-world compositions have names:

=====================  =========================================
name                   mechanisms
=====================  =========================================
deterministic          argmax
stochastic             sample(temperature=1)
threshold-abstain      argmax > threshold(min_confidence=0.9)
memorize-abstain       memorize(on_repeat=abstain) > argmax
memorize-random        memorize(on_repeat=random) > argmax
near-repeat-abstain    memorize(on_repeat=abstain) > near-repeat(on_repeat=abstain) > argmax
centroid-abstain       argmax > centroid(false_alarm=0.001)
near-repeat-suspicion  memorize(on_repeat=abstain) > near-repeat(on_repeat=abstain) >
                       argmax > suspicion
memorize-correct       correct(match=exact) > memorize(on_repeat=abstain) > argmax
near-repeat-correct    correct(match=near) > memorize(on_repeat=abstain) >
                       near-repeat(on_repeat=abstain) > argmax
moving-target-abstain  moving-target(abstain_on=disagreement, agreement=0.6)
dynamic                correct(match=near) > memorize(on_repeat=abstain) >
                       near-repeat(on_repeat=abstain) >
                       moving-target(abstain_on=disagreement, agreement=0.6) > suspicion
=====================  =========================================

``moving-target`` needs a pool model (``pool``); building it around any other model
is refused. So does ``refresh(every=N)``, a gate placed before it that replaces pool
members every ``N`` queries, each new member kept only while a canary set's accuracy
holds (:mod:`movingtarget.defenses.refresh`): ``refresh(every=200) > moving-target``.

The ``correct`` compositions ask for labels (``Answers.ask``) on the queries the
other mechanisms flag, and answer labeled inputs with their label
(:mod:`movingtarget.defenses.correct`); the arena's oracle
(``ArenaConfig.oracle_budget``) or the gateway's labelers supply the labels.

A name means one composition: a config that gives a registered name other mechanisms
is refused, so the same name never reports two different defenses.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

from movingtarget.defenses.abstain import ConfidenceThreshold
from movingtarget.defenses.base import Context, Defense, Mechanism, validate_queries
from movingtarget.defenses.centroid import CentroidDetector
from movingtarget.defenses.correct import Correct
from movingtarget.defenses.decision import Argmax, Sample
from movingtarget.defenses.labeling import LabelingQueue
from movingtarget.defenses.memorize import Memorize
from movingtarget.defenses.moving_target import MovingTarget
from movingtarget.defenses.near_repeat import NearRepeat
from movingtarget.defenses.ratelimit import RateLimit
from movingtarget.defenses.refresh import Refresh, RefreshRecord, supply_defense
from movingtarget.defenses.repair import GatedUpdate, RepairRecord
from movingtarget.defenses.suspicion import Suspicion
from movingtarget.errors import ConfigError
from movingtarget.models.base import Model
from movingtarget.registry import NamedTexts, Registry

MECHANISMS: Registry[Mechanism] = Registry("mechanism", "movingtarget.mechanisms")
MECHANISMS.register("argmax")(Argmax)
MECHANISMS.register("sample")(Sample)
MECHANISMS.register("threshold")(ConfidenceThreshold)
MECHANISMS.register("memorize")(Memorize)
MECHANISMS.register("rate-limit")(RateLimit)
MECHANISMS.register("near-repeat")(NearRepeat)
MECHANISMS.register("centroid")(CentroidDetector)
MECHANISMS.register("suspicion")(Suspicion)
MECHANISMS.register("correct")(Correct)
MECHANISMS.register("moving-target")(MovingTarget)
MECHANISMS.register("refresh")(Refresh)

#: Named compositions: name -> composition text (plugins add theirs: ``movingtarget.defenses``).
COMPOSITIONS = NamedTexts(
    {
        "deterministic": "argmax",
        "stochastic": "sample(temperature=1)",
        "threshold-abstain": "argmax > threshold(min_confidence=0.9)",
        "memorize-abstain": "memorize(on_repeat=abstain) > argmax",
        "memorize-random": "memorize(on_repeat=random) > argmax",
        "near-repeat-abstain": (
            "memorize(on_repeat=abstain) > near-repeat(on_repeat=abstain) > argmax"
        ),
        "centroid-abstain": "argmax > centroid(false_alarm=0.001)",
        "near-repeat-suspicion": (
            "memorize(on_repeat=abstain) > near-repeat(on_repeat=abstain) > argmax > suspicion"
        ),
        "memorize-correct": "correct(match=exact) > memorize(on_repeat=abstain) > argmax",
        "near-repeat-correct": (
            "correct(match=near) > memorize(on_repeat=abstain) > near-repeat(on_repeat=abstain)"
            " > argmax"
        ),
        "moving-target-abstain": "moving-target(abstain_on=disagreement, agreement=0.6)",
        # the composed dynamic defense of section 7 (the `dynamic` config's and the gateway's)
        "dynamic": (
            "correct(match=near) > memorize(on_repeat=abstain) > near-repeat(on_repeat=abstain)"
            " > moving-target(abstain_on=disagreement, agreement=0.6) > suspicion"
        ),
    },
    "movingtarget.defenses",
)

_CALL = re.compile(r"^\s*([a-z][a-z0-9_-]*)\s*(?:\((.*)\))?\s*$", re.S)


def _literal(text: str, where: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text.strip()  # bare words are strings: on_repeat=abstain


def parse_mechanism(text: str) -> tuple[str, dict[str, Any]]:
    """``"memorize(on_repeat=abstain)"`` -> ``("memorize", {"on_repeat": "abstain"})``."""
    match = _CALL.match(text)
    if not match:
        raise ConfigError(f"cannot read mechanism {text.strip()!r}; write name(param=value, ...)")
    name, args = match.group(1), match.group(2)
    params: dict[str, Any] = {}
    if args and args.strip():
        for part in args.split(","):
            if "=" not in part:
                raise ConfigError(
                    f"mechanism {name!r}: parameter {part.strip()!r} needs the form param=value"
                )
            key, value = part.split("=", 1)
            params[key.strip()] = _literal(value, f"{name}.{key.strip()}")
    return name, params


def _check_defense_name(spec: str) -> None:
    """A bare word that is neither a defense nor a mechanism: name both, with a guess."""
    word = spec.strip()
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", word) or word in COMPOSITIONS or word in MECHANISMS:
        return
    names = [*COMPOSITIONS, *MECHANISMS.names()]
    close = difflib.get_close_matches(word, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"unknown defense {word!r}{hint}; defenses: {', '.join(COMPOSITIONS)}; or compose "
        f"mechanisms with '>' (e.g. 'memorize(on_repeat=abstain) > argmax'); mechanisms: "
        f"{', '.join(MECHANISMS.names())}"
    )


def _items(spec: str | Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    items: list[tuple[str, dict[str, Any]]] = []
    if isinstance(spec, str):
        _check_defense_name(spec)
        text = COMPOSITIONS.get(spec.strip(), spec)
        items = [parse_mechanism(part) for part in text.split(">")]
    else:
        for i, table in enumerate(spec):
            if not isinstance(table, Mapping) or "type" not in table:
                raise ConfigError(f"mechanism {i + 1}: needs a 'type' naming the mechanism")
            params = {k: v for k, v in table.items() if k != "type"}
            items.append((str(table["type"]), params))
    if not items:
        raise ConfigError("a defense needs at least one mechanism")
    return items


def build_mechanisms(spec: str | Sequence[Mapping[str, Any]]) -> list[Mechanism]:
    """Mechanisms from a composition text (``a > b(x=1)``), a composition name, or a list
    of tables ``{type = "memorize", on_repeat = "abstain"}`` as configs write them."""
    return [MECHANISMS.create(name, **params) for name, params in _items(spec)]


def normalized_composition(
    spec: str | Sequence[Mapping[str, Any]],
) -> list[tuple[str, dict[str, Any]]]:
    """A composition as ``(mechanism, every parameter)`` pairs in order, defaults filled
    in, without building anything (no store is opened): equal for two specs that build
    the same composition however they are written.

    >>> normalized_composition("sample") == normalized_composition(
    ...     [{"type": "sample", "temperature": 1.0}])
    True
    >>> normalized_composition("threshold-abstain")
    [('argmax', {}), ('threshold', {'min_confidence': 0.9})]
    """
    out = []
    for name, params in _items(spec):
        try:
            bound = inspect.signature(MECHANISMS.get(name)).bind(**params)
        except TypeError as exc:
            raise ConfigError(f"mechanism {name!r}: {exc}") from None
        bound.apply_defaults()
        out.append((name, dict(bound.arguments)))
    return out


def composition_text(spec: str | Sequence[Mapping[str, Any]]) -> str:
    """A composition as text, ``memorize(on_repeat=abstain) > argmax``: a registered name
    becomes its mechanisms; tables are written as ``type(param=value, ...)``.

    >>> composition_text([{"type": "memorize", "on_repeat": "random"}, {"type": "argmax"}])
    'memorize(on_repeat=random) > argmax'
    """
    if isinstance(spec, str):
        return " ".join(COMPOSITIONS.get(spec.strip(), spec).split())
    parts = []
    for name, params in _items(spec):
        args = ", ".join(f"{k}={v}" for k, v in params.items())
        parts.append(f"{name}({args})" if args else name)
    return " > ".join(parts)


def build_defense(
    spec: str | Sequence[Mapping[str, Any]],
    model: Model,
    *,
    name: str | None = None,
    seed: int = 0,
    update: GatedUpdate | None = None,
) -> Defense:
    """A :class:`Defense` from a composition name, text, or list of tables; ``update``
    optionally gates online model updates on labels (:class:`GatedUpdate`)."""
    if isinstance(spec, str) and name is None:
        name = spec.strip() if spec.strip() in COMPOSITIONS else None
    return Defense(model, build_mechanisms(spec), name=name or "", seed=seed, update=update)


__all__ = [
    "COMPOSITIONS",
    "MECHANISMS",
    "Argmax",
    "CentroidDetector",
    "ConfidenceThreshold",
    "Context",
    "Correct",
    "Defense",
    "GatedUpdate",
    "LabelingQueue",
    "Mechanism",
    "Memorize",
    "MovingTarget",
    "NearRepeat",
    "RateLimit",
    "Refresh",
    "RefreshRecord",
    "RepairRecord",
    "Sample",
    "Suspicion",
    "build_defense",
    "build_mechanisms",
    "composition_text",
    "normalized_composition",
    "parse_mechanism",
    "supply_defense",
    "validate_queries",
]
