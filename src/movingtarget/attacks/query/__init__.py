"""Query-based black-box attacks bridged into the arena.

* :mod:`~movingtarget.attacks.query.bridge`: :class:`QueryAdversary`, which runs any
  synchronous attack function ``attack(predict, sources)`` as a coroutine (a greenlet)
  whose ``predict`` is answered by the arena's defense, query by query on the timeline;
* :mod:`~movingtarget.attacks.query.art`: ART's HopSkipJump, Square, SimBA and Boundary
  as such adversaries (:func:`art_adversary`; ART is imported when one is built).
"""

from __future__ import annotations

from movingtarget.attacks.query.art import QUERY_ATTACKS, ArtAttack, art_adversary
from movingtarget.attacks.query.bridge import (
    ABSTAIN_RULES,
    BudgetSpent,
    Predict,
    QueryAdversary,
    Sources,
)

__all__ = [
    "ABSTAIN_RULES",
    "QUERY_ATTACKS",
    "ArtAttack",
    "BudgetSpent",
    "Predict",
    "QueryAdversary",
    "Sources",
    "art_adversary",
]
