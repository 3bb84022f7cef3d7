"""The attacks box: adversaries that act against a deployed defense.

Registered names (configs and the CLI use these): ``test-set``,
``test-set-targeted``, ``rate-tracking``, ``noisy-repeat``, and the query-based
black-box attacks ``hopskipjump``, ``square``, ``simba``, ``boundary`` (bridged into
the arena, :mod:`movingtarget.attacks.query`; ART is imported when one is built).
Every factory takes the attacker's labeled pool ``(pool_x, pool_y)``, the number of
classes, a ``seed`` and the attack's own keyword parameters.

The box's families, by folder (``base.py`` holds the adversary contract they share):

* ``correlated/``: adversaries that choose which inputs to send and when to repeat
  (test set, targeted, rate tracking, noisy repeats);
* ``perturb/``: per-input attacks from the Adversarial Robustness Toolbox and minimal
  perturbations (not imported here: ART is the ``attacks`` extra);
* ``query/``: query-based black-box attacks bridged into the arena (any synchronous
  attack function; ART's HopSkipJump, Square, SimBA, Boundary);
* ``adaptive/`` (planned): attackers that adapt to a stateful defense's refusals;
* ``remote/``: the adversaries against a live gateway over HTTP (not imported here: it
  needs the ``serve`` extra's httpx).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.attacks.base import NO_TARGET, Adversary, PoolAdversary, Proposal, success
from movingtarget.attacks.correlated import (
    NoisyRepeatAttack,
    RateTrackingAttack,
    TargetedTestSetAttack,
    TestSetAttack,
)
from movingtarget.registry import Registry

ATTACKS: Registry[Adversary] = Registry("attack")
ATTACKS.register("test-set")(TestSetAttack)
ATTACKS.register("test-set-targeted")(TargetedTestSetAttack)
ATTACKS.register("rate-tracking")(RateTrackingAttack)
ATTACKS.register("noisy-repeat")(NoisyRepeatAttack)


def _query_factory(name: str) -> Any:
    """A factory of ART attack ``name`` bridged into the arena (imported when used)."""

    def build(
        pool_x: NDArray[np.float32],
        pool_y: NDArray[np.int64],
        n_classes: int,
        *,
        seed: int = 0,
        **params: Any,
    ) -> Adversary:
        from movingtarget.attacks.query.art import art_adversary

        return art_adversary(name, pool_x, pool_y, n_classes, seed=seed, **params)

    build.__name__ = build.__qualname__ = name.replace("-", "_")
    build.__doc__ = f"ART's {name} bridged into the arena (see ``art_adversary``)."
    return build


for _name in ("hopskipjump", "square", "simba", "boundary"):
    ATTACKS.register(_name)(_query_factory(_name))


def build_adversary(
    name: str,
    pool_x: NDArray[np.float32],
    pool_y: NDArray[np.int64],
    n_classes: int,
    *,
    seed: int = 0,
    **params: Any,
) -> Adversary:
    """The adversary registered as ``name``, with its pool and parameters."""
    factory = ATTACKS.get(name)
    from movingtarget.errors import ConfigError

    try:
        adversary: Adversary = factory(pool_x, pool_y, n_classes, seed=seed, **params)
    except TypeError as exc:
        raise ConfigError(f"attack {name!r}: {exc}") from None
    return adversary


__all__ = [
    "ATTACKS",
    "NO_TARGET",
    "Adversary",
    "NoisyRepeatAttack",
    "PoolAdversary",
    "Proposal",
    "RateTrackingAttack",
    "TargetedTestSetAttack",
    "TestSetAttack",
    "build_adversary",
    "success",
]
