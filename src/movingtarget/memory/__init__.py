"""The memory box: fingerprints of past queries and the stores that keep them."""

from movingtarget.memory.fingerprints import ExactFingerprint, Fingerprint, canonical
from movingtarget.memory.stores import InProcessStore, Store, occurrences_before

__all__ = [
    "ExactFingerprint",
    "Fingerprint",
    "InProcessStore",
    "Store",
    "canonical",
    "occurrences_before",
]
