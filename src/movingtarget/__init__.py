"""movingtarget: correlated test-time attacks on classifiers, and dynamic defenses.

The boxes of the design live in subpackages: :mod:`movingtarget.datasets`,
:mod:`movingtarget.models`, :mod:`movingtarget.defenses`, :mod:`movingtarget.memory`,
:mod:`movingtarget.attacks`, :mod:`movingtarget.arena`, :mod:`movingtarget.metrics`,
:mod:`movingtarget.report` and :mod:`movingtarget.cli`.
"""

from movingtarget.answers import ABSTAIN, Answers, Reason
from movingtarget.errors import ConfigError, DataError, InputError, MovingTargetError

__version__ = "0.1.0"

__all__ = [
    "ABSTAIN",
    "Answers",
    "ConfigError",
    "DataError",
    "InputError",
    "MovingTargetError",
    "Reason",
    "__version__",
]
