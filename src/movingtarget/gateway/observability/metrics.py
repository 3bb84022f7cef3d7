"""Prometheus metrics of one gateway process (its own registry, so tests may run many).

=====================================  ===========================================
metric                                 meaning
=====================================  ===========================================
movingtarget_queries_total             queries the defense answered
movingtarget_answers_total{reason}     answers by reason (model, repeat, ...)
movingtarget_abstentions_total{reason} ABSTAIN answers by reason
movingtarget_repeats_caught_total      exact or near repeats caught (any answer)
movingtarget_refusals_total{kind}      requests refused: unauthorized, revoked,
                                       rate-limited, quota-limited, invalid
movingtarget_clipped_inputs_total      inputs clipped into the model's input domain
                                       (``--out-of-domain clip``)
movingtarget_request_seconds{endpoint} request latency (histogram)
movingtarget_batch_queries             queries per model batch (histogram)
movingtarget_model_info{name,version,   the served model (sha256: of its model file,
  format,sha256}                       empty for a DATASET:MODEL spec)
=====================================  ===========================================

Per key, on the operator's registry only (``serve --metrics-port``, loopback): a key
reading ``/metrics`` must not learn other tenants' names or traffic.

==============================================  ====================================
movingtarget_key_queries_total{key}             queries the defense answered for key
movingtarget_key_abstentions_total{key,reason}  of those, ABSTAIN answers by reason
movingtarget_key_refusals_total{key,kind}       the key's requests refused (429, ...)
==============================================  ====================================

``docs/gateway-alerts.yml`` alerts on keys whose abstention share is far above benign
traffic's (an attacker probing a memory keeps being refused).
"""

from __future__ import annotations

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from movingtarget.answers import ABSTAIN, Answers, Reason

_REPEATS = [
    int(r)
    for r in (Reason.REPEAT, Reason.REPEAT_RANDOM, Reason.NEAR_REPEAT, Reason.NEAR_REPEAT_RANDOM)
]


class GatewayMetrics:
    """The gateway's counters and histograms.

    Examples
    --------
    >>> m = GatewayMetrics()
    >>> a = Answers.undecided(2); a.labels[:] = [1, -1]; a.reasons[:] = [1, 3]
    >>> m.record_answers(a)
    >>> b"movingtarget_repeats_caught_total 1.0" in m.render()
    True
    >>> m.record_key("alice", a)
    >>> b'key="alice"' in m.render(), b'key="alice"' in m.render(operator=True)
    (False, True)
    """

    content_type = CONTENT_TYPE

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queries = Counter("movingtarget_queries", "Queries the defense answered.", registry=r)
        self.answers = Counter("movingtarget_answers", "Answers by reason.", ["reason"], registry=r)
        self.abstentions = Counter(
            "movingtarget_abstentions", "ABSTAIN answers by reason.", ["reason"], registry=r
        )
        self.repeats = Counter(
            "movingtarget_repeats_caught", "Exact or near repeats caught.", registry=r
        )
        self.refusals = Counter(
            "movingtarget_refusals", "Requests refused, by kind.", ["kind"], registry=r
        )
        self.clipped = Counter(
            "movingtarget_clipped_inputs",
            "Inputs outside the model's input domain, clipped to it (--out-of-domain clip).",
            registry=r,
        )
        self.latency = Histogram(
            "movingtarget_request_seconds",
            "Request latency in seconds.",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.batch = Histogram(
            "movingtarget_batch_queries",
            "Queries per model batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.up = Gauge("movingtarget_up", "1 while the gateway serves.", registry=r)
        self.up.set(1)
        self.model = Info(
            "movingtarget_model",
            "The served model: name, version, format and (for a model file) its SHA-256.",
            registry=r,
        )
        self._labels = [x.label for x in Reason]
        # the operator's registry: everything above, and the per-key series
        self.operator_registry = CollectorRegistry()
        o = self.operator_registry
        for collector in (
            self.queries,
            self.answers,
            self.abstentions,
            self.repeats,
            self.refusals,
            self.clipped,
            self.latency,
            self.batch,
            self.up,
            self.model,
        ):
            o.register(collector)
        self.key_queries = Counter(
            "movingtarget_key_queries", "Queries answered, per key.", ["key"], registry=o
        )
        self.key_abstentions = Counter(
            "movingtarget_key_abstentions",
            "ABSTAIN answers per key, by reason.",
            ["key", "reason"],
            registry=o,
        )
        self.key_refusals = Counter(
            "movingtarget_key_refusals",
            "Requests of a key refused, by kind.",
            ["key", "kind"],
            registry=o,
        )

    @property
    def reason_labels(self) -> list[str]:
        """Reason labels by code (``reason_labels[3] == "repeat"``)."""
        return self._labels

    def record_answers(self, answers: Answers) -> None:
        """Count one batch's answers."""
        n = len(answers)
        self.queries.inc(n)
        self.batch.observe(n)
        counts = np.bincount(answers.reasons, minlength=len(self._labels))
        abstained = np.bincount(
            answers.reasons[answers.labels == ABSTAIN], minlength=len(self._labels)
        )
        for code in np.flatnonzero(counts).tolist():
            self.answers.labels(self._labels[code]).inc(int(counts[code]))
            if abstained[code]:
                self.abstentions.labels(self._labels[code]).inc(int(abstained[code]))
        caught = int(counts[_REPEATS].sum())
        if caught:
            self.repeats.inc(caught)

    def record_key(self, key: str, answers: Answers) -> None:
        """Count one key's answers (its share of a batch)."""
        self.key_queries.labels(key).inc(len(answers))
        abstained = answers.reasons[answers.labels == ABSTAIN]
        if len(abstained):
            counts = np.bincount(abstained, minlength=len(self._labels))
            for code in np.flatnonzero(counts).tolist():
                self.key_abstentions.labels(key, self._labels[code]).inc(int(counts[code]))

    def render(self, operator: bool = False) -> bytes:
        """The text exposition format (``operator``: with the per-key series)."""
        return generate_latest(self.operator_registry if operator else self.registry)
