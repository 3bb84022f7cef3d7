"""Everything ``movingtarget serve`` is told, in one value."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from movingtarget.errors import ConfigError
from movingtarget.gateway.server.inputs import OUT_OF_DOMAIN_MODES


@dataclass(frozen=True)
class GatewayConfig:
    """How one gateway replica serves.

    Examples
    --------
    >>> GatewayConfig(model="digits:logistic", defense="memorize-abstain").check().store
    'memory://'
    """

    model: str = "digits:logistic"
    defense: str = "memorize-abstain"
    store: str = "memory://"
    keys: str | None = None  # default: $MOVINGTARGET_KEYS or sqlite:///movingtarget-keys.db
    namespace: str = "mt"
    audit: Path | None = None
    max_inputs: int = 256  # inputs in one request
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch: int = 256  # queries in one model batch
    max_wait_ms: float = 1.0
    #: Remembered queries expire this long after first seen (0 or None: never).
    memory_ttl_s: float | None = 86_400.0
    #: Queries the shared cross-key pool remembers (0 or None: unbounded).
    memory_capacity: int | None = 1_000_000
    #: Queries each key's own history remembers (0 or None: unbounded).
    memory_key_capacity: int | None = 100_000
    #: An untrusted key's query is a cross-key repeat once this many other keys sent it
    #: (0: each key is held to its own history only).
    cross_key_quorum: int = 2
    #: Names of keys held to their own history only, never shown to other keys.
    trusted_keys: tuple[str, ...] = ()
    #: Names of keys whose labels (``/v1/feedback``) repair the defense; any other key's
    #: labels are stored for the record and never change an answer.
    labeler_keys: tuple[str, ...] = ()
    #: Recent queries a labeler can label for repair (their inputs kept in RAM only).
    repair_window: int = 100_000
    #: Most queries the labeling queue holds (asked queries waiting for a labeler), and
    #: most of them from one key; asks over either are dropped.
    labeling_queue_capacity: int = 10_000
    labeling_queue_per_key: int = 100
    #: Gate model updates from labeler keys' labels: the canary accuracy an update may
    #: lose and be kept (None: the model itself never learns), on ``canary`` held-out
    #: test-split items.
    update_tolerance: float | None = None
    update_steps: int = 1
    canary: int = 500
    seed: int = 0
    test_size: float = 0.3
    split_seed: int = 0
    model_seed: int = 0
    cache_dir: Path | None = None
    input_shape: tuple[int, ...] | None = None
    #: A model file that is read with pickle (.pkl, .joblib, .pt2) loads only when trusted.
    trust: bool = False
    #: Types a .skops file may hold besides those skops trusts itself.
    trusted_types: tuple[str, ...] = ()
    #: A model file's output: "auto" (from the graph), "logits" or "probabilities".
    model_output: str = "auto"
    replica: str = ""
    #: One input range [lo, hi] for every feature (default: the model's own domain).
    input_range: tuple[float, float] | None = None
    #: Inputs outside the domain: "refuse" (422), "clip" (to the domain) or "off".
    out_of_domain: str = "refuse"

    def check(self) -> GatewayConfig:
        """This config, or a :class:`ConfigError` naming the bad field."""
        checks = [
            (self.max_inputs >= 1, f"--max-inputs must be >= 1, got {self.max_inputs}"),
            (
                self.max_body_bytes >= 1024,
                f"--max-body-bytes must be >= 1024, got {self.max_body_bytes}",
            ),
            (self.max_batch >= 1, f"--max-batch must be >= 1, got {self.max_batch}"),
            (self.max_wait_ms >= 0, f"--max-wait-ms must be >= 0, got {self.max_wait_ms}"),
            (
                self.memory_ttl_s is None
                or (math.isfinite(self.memory_ttl_s) and self.memory_ttl_s >= 0),
                f"--memory-ttl must be >= 0 seconds (0: never forget), got {self.memory_ttl_s}",
            ),
            (
                self.memory_capacity is None or self.memory_capacity >= 0,
                f"--memory-capacity must be >= 0 (0: unbounded), got {self.memory_capacity}",
            ),
            (
                self.memory_key_capacity is None or self.memory_key_capacity >= 0,
                f"--memory-key-capacity must be >= 0 (0: unbounded), "
                f"got {self.memory_key_capacity}",
            ),
            (
                self.cross_key_quorum >= 0,
                f"--cross-key-quorum must be >= 0 (0: no cross-key repeats), "
                f"got {self.cross_key_quorum}",
            ),
            (
                all(isinstance(n, str) and n.strip() for n in self.trusted_keys),
                "--trusted-key must name a key",
            ),
            (
                all(isinstance(n, str) and n.strip() for n in self.labeler_keys),
                "--labeler-key must name a key",
            ),
            (
                isinstance(self.repair_window, int) and self.repair_window >= 1,
                f"--repair-window must be an integer >= 1, got {self.repair_window!r}",
            ),
            (
                isinstance(self.labeling_queue_capacity, int) and self.labeling_queue_capacity >= 1,
                f"--labeling-queue-capacity must be an integer >= 1, "
                f"got {self.labeling_queue_capacity!r}",
            ),
            (
                isinstance(self.labeling_queue_per_key, int) and self.labeling_queue_per_key >= 1,
                f"--labeling-queue-per-key must be an integer >= 1, "
                f"got {self.labeling_queue_per_key!r}",
            ),
            (
                self.update_tolerance is None
                or (
                    isinstance(self.update_tolerance, int | float)
                    and 0 <= self.update_tolerance <= 1
                ),
                f"--update-tolerance must be in [0, 1], got {self.update_tolerance!r}",
            ),
            (
                isinstance(self.update_steps, int) and self.update_steps >= 1,
                f"--update-steps must be an integer >= 1, got {self.update_steps!r}",
            ),
            (
                isinstance(self.canary, int) and self.canary >= 1,
                f"--canary must be an integer >= 1, got {self.canary!r}",
            ),
            (bool(self.namespace.strip()), "--namespace must not be empty"),
            (
                self.out_of_domain in OUT_OF_DOMAIN_MODES,
                f"--out-of-domain must be one of {', '.join(OUT_OF_DOMAIN_MODES)}, "
                f"got {self.out_of_domain!r}",
            ),
            (
                self.input_range is None
                or (
                    all(map(math.isfinite, self.input_range))
                    and self.input_range[0] < self.input_range[1]
                ),
                f"--input-range must be finite LO,HI with LO < HI, got {self.input_range}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.store.startswith("bloom:") and self.cross_key_quorum >= 2:
            raise ConfigError(
                "bloom:// remembers whether an input was seen, not by how many keys: use "
                "--cross-key-quorum 1 or 0 with it, or a counting store (memory://, sqlite, "
                "redis)"
            )
        return self

    @property
    def ttl_ms(self) -> int | None:
        """The memories' TTL in their time unit (milliseconds), or None."""
        return int(self.memory_ttl_s * 1000) if self.memory_ttl_s else None
