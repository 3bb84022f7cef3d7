"""Independent random streams for the components of one deployment.

The defense's random classes, the attacker's exploration order, the benign traffic and
the calibration of approximate memories each get their own child of
``SeedSequence(seed)``: no component's draws can line up with another's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The components of a deployment that draw random numbers, in spawn order.
COMPONENTS = ("defense", "adversary", "arena", "calibration")


@dataclass(frozen=True)
class DeploymentSeeds:
    """One integer seed per component, each from its own spawned child of the task seed.

    Examples
    --------
    >>> s = DeploymentSeeds.from_seed(0)
    >>> len({s.defense, s.adversary, s.arena, s.calibration})
    4
    >>> s == DeploymentSeeds.from_seed(0)
    True
    """

    defense: int
    adversary: int
    arena: int
    calibration: int

    @classmethod
    def from_seed(cls, seed: int) -> DeploymentSeeds:
        """Spawn the streams of deployment ``seed`` (``SeedSequence(seed).spawn``)."""
        children = np.random.SeedSequence(seed).spawn(len(COMPONENTS))
        # 63 bits: a plain non-negative int every component's default_rng accepts
        seeds = [int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for c in children]
        return cls(*seeds)
