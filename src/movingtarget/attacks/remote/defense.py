"""A live gateway seen as the arena's defense: the arena's adversaries and benign users
send their queries over HTTP, each with its own API key, exactly as real clients would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN, Answers, Reason
from movingtarget.arena.arena import ACCOUNT_STRIDE, ADVERSARY_CLIENT
from movingtarget.attacks.remote.client import GatewayClient, RemoteError
from movingtarget.errors import ConfigError


@dataclass
class Sent:
    """The attacker-side join table: for each arena time, the request and query ids."""

    t: list[int] = field(default_factory=list)
    request_id: list[str] = field(default_factory=list)
    query_id: list[str] = field(default_factory=list)
    key: list[str] = field(default_factory=list)

    def to_csv(self) -> str:
        """``t,request_id,query_id,key`` lines (join with the event log on ``t``, with the
        gateway's audit log on ``request_id`` or ``query_id``)."""
        lines = ["t,request_id,query_id,key"]
        lines += [
            f"{t},{r},{q},{k}"
            for t, r, q, k in zip(self.t, self.request_id, self.query_id, self.key, strict=True)
        ]
        return "\n".join(lines) + "\n"


class RemoteDefense:
    """Answers the arena's batches by sending them to a gateway.

    Adversary ``i``'s queries go out under its keys (``adversary_keys``). When there are
    several they are used in turn per request, like an attacker with several accounts;
    with ``by_account`` (an adversary that spreads its own queries over accounts, such as
    the adaptive attacker's ``accounts``) account ``a`` of each query goes out under
    ``adversary_keys[a % len(adversary_keys)]`` instead, so the gateway sees the accounts
    the attacker chose. Benign client ``c``'s queries go under
    ``benign_keys[c % len(benign_keys)]``. A batch is sent as runs
    of consecutive queries with the same key, in arrival order, at most ``max_inputs``
    per request; request ids are ``RUN-T`` (``T``: the arena time of the first query).

    ``reset`` cannot wipe a shared live memory; a remote run is one deployment.

    Examples
    --------
    >>> d = RemoteDefense([], [], n_classes=10, run="r")   # doctest: +SKIP
    """

    def __init__(
        self,
        adversary_keys: Sequence[GatewayClient],
        benign_keys: Sequence[GatewayClient],
        *,
        n_classes: int,
        run: str,
        name: str = "gateway",
        max_inputs: int = 256,
        key_names: dict[int, str] | None = None,
        by_account: bool = False,
    ) -> None:
        if not adversary_keys:
            raise ConfigError("attack: at least one --key is needed")
        self.adversary_keys = list(adversary_keys)
        self.benign_keys = list(benign_keys)
        self.n_classes = int(n_classes)
        self.name = name
        self.run = run
        self.max_inputs = int(max_inputs)
        self.sent = Sent()
        self._turn = 0
        self._names = key_names or {}
        self.by_account = bool(by_account)

    def reset(self) -> None:
        """Nothing to reset on this side (see the class docs)."""

    def _client(self, client: int) -> GatewayClient:
        if client >= ADVERSARY_CLIENT:
            if self.by_account:
                account = (client - ADVERSARY_CLIENT) // ACCOUNT_STRIDE
                return self.adversary_keys[account % len(self.adversary_keys)]
            c = self.adversary_keys[self._turn % len(self.adversary_keys)]
            self._turn += 1
            return c
        if not self.benign_keys:
            raise ConfigError("attack: benign traffic needs --benign-key")
        return self.benign_keys[client % len(self.benign_keys)]

    def answer(
        self,
        x: NDArray[np.float32],
        clients: NDArray[np.int64] | None = None,
        times: NDArray[np.int64] | None = None,
    ) -> Answers:
        """Send ``x`` in arrival order; the gateway's answers."""
        n = len(x)
        clients = np.zeros(n, np.int64) if clients is None else np.asarray(clients, np.int64)
        times = np.arange(n, dtype=np.int64) if times is None else np.asarray(times, np.int64)
        out = Answers.undecided(n)
        # runs of consecutive queries from the same kind of client share one request
        # (with by_account, from the same account: one key per request)
        adversarial = clients >= ADVERSARY_CLIENT
        kind = np.where(adversarial & (not self.by_account), -1, clients)
        cuts = np.flatnonzero(np.diff(kind)) + 1
        for start, end in zip(
            np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [n]]).tolist(), strict=True
        ):
            for lo in range(start, end, self.max_inputs):
                hi = min(lo + self.max_inputs, end)
                client = self._client(int(clients[lo]))
                rid = f"{self.run}-{int(times[lo])}"
                try:
                    got = client.classify(x[lo:hi], request_id=rid)
                except RemoteError as exc:
                    if exc.kind != "out-of-domain":
                        raise
                    # the gateway refused the request: to the attacker, a refusal of
                    # each of its queries (no query ids: nothing was remembered)
                    out.labels[lo:hi] = ABSTAIN
                    out.reasons[lo:hi] = int(Reason.OUT_OF_DOMAIN)
                    self.sent.t += times[lo:hi].tolist()
                    self.sent.request_id += [rid] * (hi - lo)
                    self.sent.query_id += [""] * (hi - lo)
                    self.sent.key += [self._names.get(id(client), "")] * (hi - lo)
                    continue
                out.labels[lo:hi] = got.labels
                out.reasons[lo:hi] = got.reasons
                self.sent.t += times[lo:hi].tolist()
                self.sent.request_id += [got.request_id] * (hi - lo)
                self.sent.query_id += got.query_ids
                self.sent.key += [self._names.get(id(client), "")] * (hi - lo)
        return out
