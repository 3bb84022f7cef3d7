"""Adaptive adversaries: attackers that adapt to a stateful defense's refusals.

:class:`AdaptiveAttack` (registered as ``adaptive``) learns a near-repeat memory's match
threshold by binary search on the noise of copies of a mistake, keeps its repeats just
outside it, spreads its queries over several accounts (client ids) and hides them among
clean queries.
"""

from movingtarget.attacks.adaptive.probing import AdaptiveAttack

__all__ = ["AdaptiveAttack"]
