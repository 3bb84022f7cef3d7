"""Fingerprints: what the memory box keys a query by, and how their thresholds are chosen.

Layout (one half of :mod:`movingtarget.memory`; the other is
:mod:`movingtarget.memory.stores`):

===================  ==================================================================
module               holds
===================  ==================================================================
``exact``            :class:`ExactFingerprint` (a keyed multilinear hash of a query's
                     canonical bytes), the :class:`Fingerprint` protocol, the memory
                     secret and the splitmix64 finaliser
``robust``           :class:`RobustFingerprint`: band keys that survive small noise
``neighbours``       :class:`NeighbourMemory`: nearest neighbours in a feature space,
                     its encoders and FAISS index
``calibration``      thresholds for a target benign false-match rate
``_loops``           the compiled (numba) per-value loops of ``exact`` and ``robust``,
                     loaded on first use
===================  ==================================================================

Imports go one way: this sub-package imports nothing from
:mod:`movingtarget.memory.stores` (only :mod:`movingtarget.memory._keys`, below both
halves); the stores may use :mod:`~movingtarget.memory.fingerprints.exact`'s finaliser
(the Bloom store remixes its keys with it). Modules inside the memory box import each
other by module path, never through a package ``__init__``.
"""

from __future__ import annotations

from movingtarget.memory.fingerprints.calibration import (
    Calibration,
    calibrate_radius,
    calibrate_robust,
    measure_robust,
)
from movingtarget.memory.fingerprints.exact import ExactFingerprint, Fingerprint, canonical
from movingtarget.memory.fingerprints.neighbours import (
    NeighbourIndex,
    NeighbourMemory,
    PCAEncoder,
    PenultimateEncoder,
    RandomProjectionEncoder,
)
from movingtarget.memory.fingerprints.robust import RobustFingerprint

__all__ = [
    "Calibration",
    "ExactFingerprint",
    "Fingerprint",
    "NeighbourIndex",
    "NeighbourMemory",
    "PCAEncoder",
    "PenultimateEncoder",
    "RandomProjectionEncoder",
    "RobustFingerprint",
    "calibrate_radius",
    "calibrate_robust",
    "canonical",
    "measure_robust",
]
