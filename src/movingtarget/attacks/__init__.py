"""The attacks box: adversaries that act against a deployed defense.

Registered names (configs and the CLI use these): ``test-set``,
``test-set-targeted``, ``rate-tracking``, ``noisy-repeat``, ``screening``,
``boosted-test-set``, ``adaptive``, and the query-based black-box attacks
``hopskipjump``, ``square``, ``simba``, ``boundary`` (bridged into the arena,
:mod:`movingtarget.attacks.query`; ART is imported when one is built). Every factory
takes the attacker's labeled pool ``(pool_x, pool_y)``, the number of classes, a
``seed`` and the attack's own keyword parameters.

White-box adversaries also get the deployed model: a factory whose ``needs_model``
attribute is True (or a function of the parameters that returns True, see
:func:`~movingtarget.attacks.base.model_needed`) is called with ``model=``, and only
such factories are; :func:`build_adversary` refuses to build one without a model.

The box's families, by folder (``base.py`` holds the adversary contract they share):

* ``correlated/``: adversaries that choose which inputs to send and when to repeat
  (test set, targeted, rate tracking, noisy repeats);
* ``perturb/``: per-input attacks from the Adversarial Robustness Toolbox and minimal
  perturbations (not imported here: ART is the ``attacks`` extra);
* ``query/``: query-based black-box attacks bridged into the arena (any synchronous
  attack function; ART's HopSkipJump, Square, SimBA, Boundary);
* ``adaptive/``: attackers that adapt to a stateful defense's refusals (they learn its
  match threshold, spread queries over accounts, hide them among clean ones);
* ``remote/``: the adversaries against a live gateway over HTTP (not imported here: it
  needs the ``serve`` extra's httpx).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.attacks.adaptive import AdaptiveAttack
from movingtarget.attacks.base import (
    NO_TARGET,
    Adversary,
    PoolAdversary,
    Proposal,
    model_needed,
    success,
)
from movingtarget.attacks.correlated import (
    BoostedTestSetAttack,
    NoisyRepeatAttack,
    RateTrackingAttack,
    ScreeningAttack,
    TargetedTestSetAttack,
    TestSetAttack,
)
from movingtarget.registry import Registry

ATTACKS: Registry[Adversary] = Registry("attack", "movingtarget.attacks")
ATTACKS.register("test-set")(TestSetAttack)
ATTACKS.register("test-set-targeted")(TargetedTestSetAttack)
ATTACKS.register("rate-tracking")(RateTrackingAttack)
ATTACKS.register("noisy-repeat")(NoisyRepeatAttack)
ATTACKS.register("screening")(ScreeningAttack)
ATTACKS.register("boosted-test-set")(BoostedTestSetAttack)
ATTACKS.register("adaptive")(AdaptiveAttack)


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
    model: Any = None,
    **params: Any,
) -> Adversary:
    """The adversary registered as ``name``, with its pool and parameters.

    ``model`` is the deployed model (what the defense answers with). It goes only to
    white-box adversaries (:func:`~movingtarget.attacks.base.model_needed`), which
    cannot be built without it; every other adversary ignores it, so a caller that
    has the model may always pass it.

    Examples
    --------
    >>> x = np.eye(3, dtype=np.float32); y = np.arange(3)
    >>> build_adversary("test-set", x, y, 3, seed=0).name
    'test-set'
    >>> build_adversary("screening", x, y, 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    movingtarget.errors.ConfigError: attack 'screening' is white-box: it needs the deployed ...
    """
    factory = ATTACKS.get(name)
    from movingtarget.errors import ConfigError

    if model_needed(factory, params):
        if model is None:
            raise ConfigError(
                f"attack {name!r} is white-box: it needs the deployed model "
                "(build_adversary(..., model=...)); the experiment runner passes it, a "
                "remote gateway cannot"
            )
        params = {**params, "model": model}
    try:
        adversary: Adversary = factory(pool_x, pool_y, n_classes, seed=seed, **params)
    except TypeError as exc:
        raise ConfigError(f"attack {name!r}: {exc}") from None
    return adversary


__all__ = [
    "ATTACKS",
    "NO_TARGET",
    "AdaptiveAttack",
    "Adversary",
    "BoostedTestSetAttack",
    "NoisyRepeatAttack",
    "PoolAdversary",
    "Proposal",
    "RateTrackingAttack",
    "ScreeningAttack",
    "TargetedTestSetAttack",
    "TestSetAttack",
    "build_adversary",
    "model_needed",
    "success",
]
