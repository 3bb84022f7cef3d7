"""What a defense says about each query: a class, or ABSTAIN with a reason."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

#: The label a defense gives when it declines to classify a query.
ABSTAIN: int = -1


class Reason(IntEnum):
    """Why a query got its answer; the mechanism that decided last sets it.

    Examples
    --------
    >>> Reason.NEAR_REPEAT.label
    'near-repeat'
    >>> Reason.from_label("rate-limited") is Reason.RATE_LIMITED
    True
    """

    UNDECIDED = 0
    MODEL = 1  # the model's own decision (argmax or a sample)
    LOW_CONFIDENCE = 2  # abstained: the model's top probability is below a threshold
    REPEAT = 3  # abstained: an exact repeat of an earlier query
    REPEAT_RANDOM = 4  # a uniformly random class: an exact repeat
    NEAR_REPEAT = 5  # abstained: an approximate repeat
    NEAR_REPEAT_RANDOM = 6  # a uniformly random class: an approximate repeat
    RATE_LIMITED = 7  # abstained: the client sent too many queries
    DISAGREEMENT = 8  # abstained: members of a model pool disagree
    CORRECTED = 9  # answered from a correction memory (a label given as feedback)
    ADVERSARIAL_LIKELIHOOD = 10  # abstained: the input looks adversarial (centroid score)
    OUT_OF_DOMAIN = 11  # refused: outside the served model's input domain (a remote gateway)
    SUSPENDED = 12  # abstained: the client's suspicion score suspended it

    @property
    def label(self) -> str:
        """The reason as written in event logs and reports (``near-repeat``)."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_label(cls, label: str) -> Reason:
        """Inverse of :attr:`label`."""
        return cls[label.upper().replace("-", "_")]


# plain ints for hot paths: IntEnum attribute lookups cost microseconds per call
_UNDECIDED = int(Reason.UNDECIDED)
MODEL = int(Reason.MODEL)


@dataclass
class Answers:
    """Answers to a batch of ``n`` queries, in arrival order.

    ``labels[i]`` is a class index or :data:`ABSTAIN`; ``reasons[i]`` is a :class:`Reason`;
    ``ask[i]`` is True where the defense asks for the query's true label (None: no
    mechanism of the defense asks, see :mod:`movingtarget.defenses.labeling`).

    Examples
    --------
    >>> a = Answers.undecided(3)
    >>> a.labels[:] = [2, ABSTAIN, 0]
    >>> a.reasons[:] = [Reason.MODEL, Reason.REPEAT, Reason.MODEL]
    >>> a.abstained.tolist()
    [False, True, False]
    """

    labels: NDArray[np.int64]
    reasons: NDArray[np.uint8]
    ask: NDArray[np.bool_] | None = None

    @classmethod
    def undecided(cls, n: int) -> Answers:
        """``n`` answers that no mechanism has decided yet."""
        return cls(labels=np.full(n, ABSTAIN, dtype=np.int64), reasons=np.zeros(n, dtype=np.uint8))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def abstained(self) -> NDArray[np.bool_]:
        """True where the answer is ABSTAIN."""
        return self.labels == ABSTAIN

    @property
    def undecided_mask(self) -> NDArray[np.bool_]:
        """True where no mechanism has decided yet."""
        return self.reasons == _UNDECIDED

    def reason_labels(self) -> list[str]:
        """Reasons as strings (``model``, ``repeat``, ...)."""
        names = [r.label for r in Reason]
        return [names[i] for i in self.reasons.tolist()]
