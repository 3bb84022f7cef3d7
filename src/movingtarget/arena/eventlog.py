"""The event log: one row per query, written to disk and read back."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import Reason
from movingtarget.errors import DataError

#: Column order on disk.
COLUMNS = (
    "t",
    "round",
    "client",
    "adversary",
    "source",
    "noisy",
    "y_true",
    "target",
    "answer",
    "reason",
)
_INT_COLUMNS = ("t", "round", "client", "source", "noisy", "y_true", "target", "answer")


@dataclass
class EventLog:
    """Columns of equal length, one entry per query in arrival order.

    ``adversary`` is the index into ``adversaries`` (the adversaries' names), or -1 for
    benign traffic; ``reason`` holds :class:`~movingtarget.answers.Reason` codes.
    ``x`` holds the query inputs themselves when the arena was asked to keep them
    (``Arena.run(..., inputs=True)``), for features of query trajectories
    (:mod:`movingtarget.metrics.trajectory`); it stays in memory, never on disk.

    Examples
    --------
    >>> log = EventLog.empty(["test-set"])
    >>> len(log)
    0
    """

    t: NDArray[np.int64]
    round: NDArray[np.int64]
    client: NDArray[np.int64]
    adversary: NDArray[np.int64]
    source: NDArray[np.int64]
    noisy: NDArray[np.int64]
    y_true: NDArray[np.int64]
    target: NDArray[np.int64]
    answer: NDArray[np.int64]
    reason: NDArray[np.uint8]
    adversaries: list[str] = field(default_factory=list)
    x: NDArray[np.float32] | None = None

    @classmethod
    def empty(cls, adversaries: list[str]) -> EventLog:
        """A log with no rows."""
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z, z, z, z, z, z, np.zeros(0, np.uint8), list(adversaries))

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def adversarial(self) -> NDArray[np.bool_]:
        """True for adversarial queries."""
        return self.adversary >= 0

    def select(self, mask: NDArray[np.bool_]) -> EventLog:
        """The rows where ``mask`` is True."""
        return EventLog(
            **{c: getattr(self, c)[mask] for c in COLUMNS},
            adversaries=list(self.adversaries),
            x=None if self.x is None else self.x[mask],
        )

    def to_csv(self) -> str:
        """The log as CSV text (stable: the same log always gives the same bytes)."""
        names = [*self.adversaries, ""]  # index -1 is benign
        reasons = [r.label for r in Reason]
        rows = zip(
            self.t.tolist(),
            self.round.tolist(),
            self.client.tolist(),
            [names[i] for i in self.adversary.tolist()],
            self.source.tolist(),
            self.noisy.tolist(),
            self.y_true.tolist(),
            self.target.tolist(),
            self.answer.tolist(),
            [reasons[i] for i in self.reason.tolist()],
            strict=True,
        )
        # one %-format per row: several times faster than numpy's int-to-str casts
        fmt = "%d,%d,%d,%s,%d,%d,%d,%d,%d,%s"
        return "\n".join([",".join(COLUMNS), *(fmt % row for row in rows)]) + "\n"

    def write(self, path: str | Path) -> None:
        """Write the log as CSV."""
        Path(path).write_text(self.to_csv(), encoding="utf-8")

    @classmethod
    def read(cls, path: str | Path) -> EventLog:
        """Read a log written by :meth:`write`; a :class:`DataError` names what is wrong."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"event log {p} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read event log {p}: {exc}") from None
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or tuple(rows[0]) != COLUMNS:
            raise DataError(f"event log {p}: header must be {','.join(COLUMNS)}")
        body = rows[1:]
        if any(len(r) != len(COLUMNS) for r in body):
            bad = next(i for i, r in enumerate(body) if len(r) != len(COLUMNS))
            raise DataError(f"event log {p}: line {bad + 2} has the wrong number of fields")
        cols = list(zip(*body, strict=True)) if body else [()] * len(COLUMNS)
        data = dict(zip(COLUMNS, cols, strict=True))
        adversaries: list[str] = []
        for name in data["adversary"]:
            if name and name not in adversaries:
                adversaries.append(name)
        index = {name: i for i, name in enumerate(adversaries)} | {"": -1}
        try:
            out: dict[str, NDArray[np.int64]] = {
                c: np.array(data[c], dtype=np.int64) for c in _INT_COLUMNS
            }
            reason = np.array([Reason.from_label(r) for r in data["reason"]], dtype=np.uint8)
        except (ValueError, KeyError) as exc:
            raise DataError(f"event log {p}: bad value ({exc})") from None
        adv = np.array([index[a] for a in data["adversary"]], dtype=np.int64)
        return cls(**out, adversary=adv, reason=reason, adversaries=adversaries)  # type: ignore[arg-type]
