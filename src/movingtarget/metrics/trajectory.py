"""Features of query trajectories: how a client's successive queries relate.

A query-based attack walks: HopSkipJump probes many points around one boundary point,
Square tries one square after another on its best input. Stateful detectors read that
walk off the stream of one client's queries (GWAD, Li et al., detects HopSkipJump by the
cosine similarity of successive query differences). Per client, from an event log whose
inputs were kept (``Arena.run(..., inputs=True)``):

* ``duplicate_share``: the share of its queries byte-identical to one it sent before;
* ``step_cosine``: the mean cosine similarity of successive query differences,
  ``cos(x[t] - x[t-1], x[t+1] - x[t])`` (about -0.5 for unrelated inputs; other values
  show a structured walk);
* ``step_l2``: the mean L2 distance between successive queries, over the mean L2 norm
  of the queries (small: the client keeps asking about nearly the same input).

:func:`first_detection` gives the query (1-based) of an adversary's first ABSTAIN with
a repeat reason (exact or near repeat), the defense's moment of detection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN, Reason
from movingtarget.arena.eventlog import EventLog

#: The reasons that say a query was recognized as (nearly) asked before.
DETECTION_REASONS = (int(Reason.REPEAT), int(Reason.NEAR_REPEAT))


@dataclass(frozen=True)
class Trajectory:
    """The trajectory features of one client's queries (NaN where undefined).

    Examples
    --------
    >>> t = trajectory(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]]))
    >>> t.queries, t.duplicate_share
    (4, 0.25)
    """

    queries: int
    duplicate_share: float
    step_cosine: float
    step_l2: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict (for JSON)."""
        return asdict(self)


def duplicate_share(x: NDArray[np.generic]) -> float:
    """Share of the rows of ``x`` byte-identical to an earlier row.

    >>> duplicate_share(np.array([[1, 2], [1, 2], [3, 4]], np.float32))
    0.3333333333333333
    """
    n = len(x)
    if n == 0:
        return float("nan")
    flat = np.ascontiguousarray(np.asarray(x).reshape(n, -1))
    rows = flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()
    return (n - len(np.unique(rows))) / n


def trajectory(x: NDArray[np.generic]) -> Trajectory:
    """The features of one client's queries ``x``, in the order they were sent."""
    n = len(x)
    flat = np.asarray(x, np.float64).reshape(n, -1)
    cos = l2 = float("nan")
    if n >= 2:
        d = np.diff(flat, axis=0)
        norms = np.linalg.norm(d, axis=1)
        scale = float(np.linalg.norm(flat, axis=1).mean())
        l2 = float(norms.mean() / scale) if scale > 0 else float("nan")
        if n >= 3:
            a, b = d[:-1], d[1:]
            na, nb = norms[:-1], norms[1:]
            ok = (na > 0) & (nb > 0)  # an exact repeat has no direction
            if ok.any():
                cos = float(((a[ok] * b[ok]).sum(axis=1) / (na[ok] * nb[ok])).mean())
    return Trajectory(n, duplicate_share(x), cos, l2)


def trajectories(log: EventLog) -> dict[int, Trajectory]:
    """Each client's :class:`Trajectory` (client id -> features)."""
    if log.x is None:
        raise ValueError("the event log holds no inputs: run the arena with inputs=True")
    out = {}
    for client in np.unique(log.client).tolist():
        out[int(client)] = trajectory(log.x[log.client == client])
    return out


def first_detection(log: EventLog, adversary: int = 0) -> int | None:
    """The query (1-based, among the adversary's) first answered ABSTAIN for a repeat or
    near repeat; None when none was.

    >>> z = np.zeros(3, np.int64)
    >>> log = EventLog(t=np.arange(3), round=z, client=z, adversary=z, source=z, noisy=z,
    ...                y_true=z, target=z - 1, answer=np.array([0, -1, -1]),
    ...                reason=np.array([1, 5, 3], np.uint8), adversaries=["a"])
    >>> first_detection(log)
    2
    """
    mine = log.adversary == adversary
    hit = (log.answer[mine] == ABSTAIN) & np.isin(log.reason[mine], DETECTION_REASONS)
    return int(np.argmax(hit)) + 1 if hit.any() else None


def trajectory_metrics(log: EventLog, adversary: int = 0) -> dict[str, float | int | None]:
    """The adversary's trajectory features and the benign clients' (their mean over
    clients with enough queries), and the adversary's first detection."""
    out: dict[str, float | int | None] = {"first_detection": first_detection(log, adversary)}
    if log.x is None:
        return out
    mine = log.adversary == adversary
    t = trajectory(log.x[mine])
    out.update(duplicate_share=t.duplicate_share, step_cosine=t.step_cosine, step_l2=t.step_l2)
    benign = [v for c, v in trajectories(log.select(log.adversary < 0)).items() if c >= 0]

    def mean(key: str) -> float:
        vals = [getattr(v, key) for v in benign]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    out.update(
        benign_duplicate_share=mean("duplicate_share"),
        benign_step_cosine=mean("step_cosine"),
        benign_step_l2=mean("step_l2"),
    )
    return out
