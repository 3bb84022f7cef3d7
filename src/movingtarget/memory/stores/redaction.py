"""Store URLs made safe to print: passwords replaced by ``***``.

A leaf module (it imports nothing of the memory box), so every store, key store and
error message can redact a URL without importing :mod:`movingtarget.memory.stores.urls`,
which imports every store.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print in errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def redact_safely(url: str) -> str:
    """:func:`redact`, or a placeholder for a URL too malformed to read."""
    try:
        return redact(url)
    except ValueError:
        return "<unreadable URL>"
