"""What both halves of the memory box share: batches of 64-bit keys.

Below :mod:`movingtarget.memory.fingerprints` and :mod:`movingtarget.memory.stores`,
importing neither: the fingerprints' calibration, the stores' semantics and the rate
limits all count earlier copies of a key in one stream the same way.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def occurrences_before(keys: NDArray[np.uint64]) -> NDArray[np.int64]:
    """For each position, how many earlier positions in ``keys`` hold the same key.

    >>> occurrences_before(np.array([5, 7, 5, 5, 7], dtype=np.uint64)).tolist()
    [0, 0, 1, 2, 1]
    """
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = ranked[1:] != ranked[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))
    out = np.empty(len(keys), dtype=np.int64)
    out[order] = np.arange(len(keys)) - group_start
    return out
