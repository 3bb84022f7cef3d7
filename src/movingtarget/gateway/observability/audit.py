"""The audit log: one JSON line per query the defense answered.

Fields: ``request_id``, ``query_id``, ``key_id``, ``key``, ``time`` (ISO 8601, UTC),
``time_ms``, ``answer`` (a class, or null for ABSTAIN), ``abstained``, ``reason``,
``mechanism`` (the mechanism that decided, e.g. ``memorize(on_repeat=abstain)``),
``defense``, ``model``, ``model_version``, ``replica``. The request id joins it with
the attacker-side ``queries.csv`` that ``movingtarget attack`` writes beside its event
log; :func:`summarize` reports coverage and abstentions per key.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from movingtarget.answers import ABSTAIN, Answers, Reason
from movingtarget.defenses import Defense, RepairRecord
from movingtarget.errors import ConfigError, DataError

# which registered mechanism sets each reason (the decision mechanism sets "model")
_SETS = {
    Reason.LOW_CONFIDENCE: ("threshold",),
    Reason.REPEAT: ("memorize",),
    Reason.REPEAT_RANDOM: ("memorize",),
    Reason.NEAR_REPEAT: ("near-repeat",),
    Reason.NEAR_REPEAT_RANDOM: ("near-repeat",),
    Reason.RATE_LIMITED: ("rate-limit",),
    Reason.DISAGREEMENT: ("moving-target", "pool"),
    Reason.CORRECTED: ("correct", "active-learning"),
    Reason.ADVERSARIAL_LIKELIHOOD: ("centroid",),
    Reason.SUSPENDED: ("suspicion",),
}


def deciding_mechanisms(defense: Defense) -> list[str]:
    """For each :class:`Reason` code, the description of the mechanism in ``defense``
    that gives it (the reason's own label when none does).

    >>> import numpy as np
    >>> from movingtarget.defenses import build_defense
    >>> class M:
    ...     n_classes = 2
    ...     def predict_proba(self, x): return np.tile([.5, .5], (len(x), 1))
    >>> names = deciding_mechanisms(build_defense("memorize-abstain", M()))
    >>> names[Reason.MODEL], names[Reason.REPEAT]
    ('argmax', 'memorize(on_repeat=abstain)')
    """
    out = []
    for reason in Reason:
        found = reason.label
        for mech in defense.mechanisms:
            text = mech.describe()
            if (reason == Reason.MODEL and mech.role == "decision") or any(
                text.startswith(prefix) for prefix in _SETS.get(reason, ())
            ):
                found = text
        out.append(found)
    return out


class AuditLog:
    """Appends JSON lines to ``path`` (``None``: keep nothing). Thread-safe.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
    >>> log = AuditLog(path, defense="d", model="m", model_version="v", mechanisms=["x"] * 10)
    >>> a = Answers.undecided(1); a.labels[:] = 3; a.reasons[:] = Reason.MODEL
    >>> log.write(["r1"], ["q1"], np.array([7]), ["alice"], np.array([0]), a)
    >>> json.loads(open(path).read())["answer"]
    3
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        defense: str,
        model: str,
        model_version: str,
        mechanisms: Sequence[str],
        replica: str = "",
        model_sha256: str | None = None,
    ) -> None:
        self.path = Path(path) if path else None
        self._static: dict[str, str | None] = {
            "defense": defense,
            "model": model,
            "model_version": model_version,
            "replica": replica,
        }
        if model_sha256 is not None:  # a model file: which bytes answered, for the record
            self._static["model_sha256"] = model_sha256
        self._mechanisms = list(mechanisms)
        self._reasons = [r.label for r in Reason]
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # line-buffered appends: each batch's lines reach the file whole
                self._file = self.path.open("a", encoding="utf-8", buffering=1)
            except OSError as exc:
                raise ConfigError(f"--audit {self.path}: cannot open ({exc})") from None

    def write(
        self,
        request_ids: Sequence[str],
        query_ids: Sequence[str],
        key_ids: Iterable[int],
        key_names: Sequence[str],
        times_ms: Iterable[int],
        answers: Answers,
    ) -> None:
        """One line per query (all arguments are per query, in the same order)."""
        if self._file is None:
            return
        lines = []
        static = json.dumps(self._static)[1:-1]
        for rid, qid, kid, kname, t, label, reason in zip(
            request_ids,
            query_ids,
            list(key_ids),
            key_names,
            list(times_ms),
            answers.labels.tolist(),
            answers.reasons.tolist(),
            strict=True,
        ):
            when = datetime.fromtimestamp(int(t) / 1000, UTC).isoformat(timespec="milliseconds")
            row = {
                "request_id": rid,
                "query_id": qid,
                "key_id": int(kid),
                "key": kname,
                "time": when.replace("+00:00", "Z"),
                "time_ms": int(t),
                "answer": None if label == ABSTAIN else int(label),
                "abstained": label == ABSTAIN,
                "reason": self._reasons[reason],
                "mechanism": self._mechanisms[reason],
            }
            lines.append(json.dumps(row)[:-1] + ", " + static + "}\n")
        with self._lock:
            self._file.write("".join(lines))

    def repair(
        self,
        key_id: int,
        key_name: str,
        query_ids: Sequence[str],
        labels: Sequence[int],
        learned: int,
        update: RepairRecord | None = None,
    ) -> None:
        """One line for a labeler's repair: who labeled which queries as what, how many
        labels the defense learned (``"event": "repair"``; answer lines have none) and,
        for a gated model update, its canary accuracy before and after and whether it
        was kept (``"model_update": "kept"`` or ``"rolled back"``)."""
        if self._file is None:
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        row: dict[str, object] = {
            "event": "repair",
            "key_id": int(key_id),
            "key": key_name,
            "time": now,
            "query_ids": list(query_ids),
            "labels": [int(v) for v in labels],
            "learned": int(learned),
            **self._static,
        }
        if update is not None:
            row["model_update"] = "kept" if update.accepted else "rolled back"
            row["canary_before"] = round(update.before, 6)
            row["canary_after"] = round(update.after, 6)
        with self._lock:
            self._file.write(json.dumps(row) + "\n")

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_audit(path: str | Path) -> list[dict[str, Any]]:
    """The lines of an audit log; a :class:`DataError` names a bad line."""
    rows = []
    try:
        with Path(path).open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"audit log {path}: line {n} is not JSON ({exc})") from None
    except OSError as exc:
        raise DataError(f"cannot read audit log {path}: {exc}") from None
    return rows


def summarize(
    rows: Sequence[dict[str, Any]], labels: dict[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """Per key: queries, coverage (share answered), abstentions by reason and, where
    ``labels`` (query id -> true class, e.g. from feedback) cover answered queries, the
    error on answered queries.

    >>> q = {"key": "a", "abstained": False, "reason": "model"}
    >>> rows = [{**q, "query_id": "1", "answer": 2},
    ...         {**q, "query_id": "2", "answer": None, "abstained": True, "reason": "repeat"}]
    >>> s = summarize(rows, {"1": 3})["a"]
    >>> s["coverage"], s["abstained"], s["error_answered"]
    (0.5, {'repeat': 1}, 1.0)
    """
    per: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        per[str(row.get("key", ""))].append(row)
    out = {}
    for key, group in sorted(per.items()):
        answered = [r for r in group if not r.get("abstained")]
        labeled = [r for r in answered if labels and r.get("query_id") in labels]
        wrong = sum(1 for r in labeled if labels and r["answer"] != labels[r["query_id"]])
        out[key] = {
            "queries": len(group),
            "coverage": len(answered) / len(group) if group else float("nan"),
            "abstained": dict(Counter(r["reason"] for r in group if r.get("abstained"))),
            "labeled_answered": len(labeled),
            "error_answered": wrong / len(labeled) if labeled else float("nan"),
        }
    return out
