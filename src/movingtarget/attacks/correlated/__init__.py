"""Correlated adversaries: they choose *which* inputs to send, and when to repeat.

The test set attack and its variants (targeted, noisy repeats, perturbation-boosted),
the rate-tracking attacker and white-box offline screening, all after Goodfellow
(2019). They are registered by name in :data:`movingtarget.attacks.ATTACKS`.
"""

from movingtarget.attacks.correlated.boosted import BoostedTestSetAttack
from movingtarget.attacks.correlated.rate_tracking import RateTrackingAttack
from movingtarget.attacks.correlated.screening import ScreeningAttack
from movingtarget.attacks.correlated.test_set import (
    NoisyRepeatAttack,
    TargetedTestSetAttack,
    TestSetAttack,
)

__all__ = [
    "BoostedTestSetAttack",
    "NoisyRepeatAttack",
    "RateTrackingAttack",
    "ScreeningAttack",
    "TargetedTestSetAttack",
    "TestSetAttack",
]
