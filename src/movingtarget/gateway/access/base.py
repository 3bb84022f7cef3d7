"""API keys: records, tokens (stored only as SHA-256 digests), and the store protocol.

A key is created once with ``movingtarget keys create NAME``; its token is shown then
and never again (the store keeps ``sha256(token)``). Each key has a numeric id — the
client id the defense sees — and its own limits: a token bucket (``rate`` queries per
second, ``burst`` at most) and an optional ``quota`` of queries per ``quota_window``
seconds. One query is one input, so a batch of 64 costs 64 tokens.

These are the types every part of the access side shares: the stores
(:mod:`~movingtarget.gateway.access.keys_sqlite`,
:mod:`~movingtarget.gateway.access.keys_redis`) and the limits import them, and
:func:`~movingtarget.gateway.access.keys.open_keys` opens a store by its URL.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from movingtarget.errors import ConfigError
from movingtarget.gateway.problems import Problem

TOKEN_PREFIX = "mt_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Default limits of a new key: queries per second, bucket size, no quota.
DEFAULT_RATE = 50.0
DEFAULT_BURST = 256.0
DEFAULT_QUOTA_WINDOW = 86_400


def new_token() -> str:
    """A fresh key token: ``mt_`` and 43 URL-safe characters (256 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the store keeps and looks up: the hex SHA-256 of the token.

    A token is 256 random bits, so a plain digest cannot be reversed or guessed;
    no salt is needed and lookups stay one indexed read.

    >>> token_digest("mt_x") == token_digest("mt_x") != token_digest("mt_y")
    True
    """
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a.encode(), b.encode())


def check_name(name: str) -> str:
    """A key name: 1-64 characters of letters, digits, ``.``, ``_``, ``-``."""
    if not _NAME.match(name):
        raise ConfigError(
            f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def mint(name: str, limits: KeyLimits) -> tuple[KeyLimits, str, str]:
    """A store's first step in creating a key: check its name and limits and draw its
    token; returns the checked limits, the token (shown once) and its digest (kept)."""
    check_name(name)
    token = new_token()
    return limits.check(), token, token_digest(token)


def unknown_key() -> Problem:
    """401 for a token no store knows."""
    return Problem(401, "unauthorized", "unknown API key")


def revoked_key(name: str) -> Problem:
    """403 for the token of a revoked key."""
    return Problem(403, "revoked", f"API key {name!r} was revoked", key=name)


@dataclass(frozen=True)
class KeyLimits:
    """Limits of one key. ``rate`` 0 means no rate limit; ``quota`` None means none.

    Examples
    --------
    >>> KeyLimits(rate=10, burst=20).check().burst
    20.0
    """

    rate: float = DEFAULT_RATE
    burst: float = DEFAULT_BURST
    quota: int | None = None
    quota_window: int = DEFAULT_QUOTA_WINDOW

    def check(self) -> KeyLimits:
        """These limits, or a :class:`ConfigError` naming the bad one."""
        if not self.rate >= 0:
            raise ConfigError(
                f"--rate must be >= 0 queries per second (0: unlimited), got {self.rate}"
            )
        if not self.burst >= 1:
            raise ConfigError(f"--burst must be >= 1 query, got {self.burst}")
        if self.quota is not None and self.quota < 1:
            raise ConfigError(f"--quota must be >= 1 query, got {self.quota}")
        if self.quota_window < 1:
            raise ConfigError(f"--quota-window must be >= 1 second, got {self.quota_window}")
        return KeyLimits(float(self.rate), float(self.burst), self.quota, int(self.quota_window))


@dataclass(frozen=True)
class KeyRecord:
    """One API key as stored (never the token itself).

    Examples
    --------
    >>> KeyRecord(1, "alice", KeyLimits(), created=0.0).active
    True
    """

    id: int
    name: str
    limits: KeyLimits
    created: float
    revoked: float | None = None

    @property
    def active(self) -> bool:
        """False once revoked."""
        return self.revoked is None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for listings (JSON)."""
        out = asdict(self)
        out.update(out.pop("limits"))
        return out


@dataclass(frozen=True)
class Grant:
    """An authorized request: the key's id (the defense's client id) and name."""

    key_id: int
    name: str


class KeyStore(Protocol):
    """Keys, their limits' state, and label feedback, behind one back end.

    ``authorize`` is the hot path: look the token digest up, refuse unknown (401) or
    revoked (403) keys, then charge ``cost`` queries to the key's token bucket and
    quota atomically, or refuse with 429 and the seconds to wait. It raises
    :class:`~movingtarget.gateway.problems.Problem`.
    """

    url: str

    def create(self, name: str, limits: KeyLimits) -> tuple[KeyRecord, str]:
        """A new key and its token (shown once)."""
        ...

    def list_keys(self) -> list[KeyRecord]:
        """Every key, oldest first."""
        ...

    def revoke(self, name: str) -> KeyRecord:
        """Revoke the key called ``name``; a :class:`ConfigError` if there is none."""
        ...

    def authorize(self, digest: str, cost: int) -> Grant:
        """Grant ``cost`` queries to the key with this token digest, or raise a Problem."""
        ...

    def add_feedback(self, key_id: int, items: list[tuple[str, int]]) -> int:
        """Store ``(query_id, label)`` pairs given by ``key_id``; returns how many."""
        ...

    def feedback(self) -> list[dict[str, Any]]:
        """Every stored label (for the active-learning work), oldest first."""
        ...

    def ping(self) -> None:
        """Raise if the back end cannot be reached."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
