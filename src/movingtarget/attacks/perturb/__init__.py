"""Per-input attacks: perturb one input until the model (or the defense) gets it wrong.

The correlated adversaries beside this package (:mod:`movingtarget.attacks.correlated.test_set`,
:mod:`movingtarget.attacks.correlated.rate_tracking`) choose *which* natural inputs to send; the
attacks here move each input into the "adversarial regions" between the model's and
the true decision boundary (Papernot & McDaniel 2016). They come from the Adversarial
Robustness Toolbox (ART), never re-implemented; this package holds only what joins
ART to the project:

* :mod:`~movingtarget.attacks.perturb.estimators`: the project's models and defenses
  as ART estimators, with the capabilities each offers (gradients, scores, labels);
* :mod:`~movingtarget.attacks.perturb.registry`: the attacks by name
  (:data:`PER_INPUT_ATTACKS`), each with its budget, its norms, whether it can be
  targeted, and the capability it needs, checked before ART is asked;
* :mod:`~movingtarget.attacks.perturb.minimal`: the smallest perturbation that changes
  each input's class (the raw material of *resilience*, :mod:`movingtarget.metrics.resilience`).

ART is imported only when an attack runs (the ``attacks`` extra).
"""

from __future__ import annotations

from movingtarget.attacks.perturb.registry import (
    PER_INPUT_ATTACKS,
    AttackSpec,
    Crafted,
    build_attack,
    craft,
)

__all__ = ["PER_INPUT_ATTACKS", "AttackSpec", "Crafted", "build_attack", "craft"]
