"""Request ids and query ids.

A request id is the client's ``X-Request-ID`` (1-64 letters, digits, ``_``, ``-``) or a
fresh random one; it joins the audit log with the attacker-side event log. A query id
is ``NONCE.INDEX.TAG``: ``NONCE`` is drawn by the server for each request (a client's
request id may repeat; query ids never do), and ``TAG`` is a keyed hash binding the id
to the key that asked: feedback is accepted only from that key, with no lookup on the
hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def request_id(header: str | None) -> str:
    """The client's request id when it is well formed, else a new random one.

    >>> request_id("run1-000042"), len(request_id(None)), len(request_id("bad id!"))
    ('run1-000042', 32, 32)
    """
    if header and _REQUEST_ID.match(header):
        return header
    return secrets.token_hex(16)


class QueryIds:
    """Issues and checks query ids with a secret shared by every replica.

    Examples
    --------
    >>> ids = QueryIds(b"secret")
    >>> q = ids.issue("req", 2, key_id=7)
    >>> q[0].startswith("req.0."), ids.check(q[1], key_id=7), ids.check(q[1], key_id=8)
    (True, True, False)
    >>> ids.check("req.0.\u00fe", key_id=7)
    False
    """

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.blake2b(secret, digest_size=32, person=b"mt-query-ids").digest()

    def _tag(self, stem: str, key_id: int) -> str:
        return hmac.new(self._key, f"{stem}|{key_id}".encode(), hashlib.sha256).hexdigest()[:16]

    def issue(self, request: str, n: int, key_id: int) -> list[str]:
        """Query ids of ``n`` queries by ``key_id``, stemmed on ``request`` (the server's
        nonce for the request)."""
        return [f"{request}.{i}.{self._tag(f'{request}.{i}', key_id)}" for i in range(n)]

    def check(self, query_id: str, key_id: int) -> bool:
        """True when ``query_id`` was issued to ``key_id``."""
        # Ids come from the client: anything but ASCII is not one of ours, and
        # compare_digest refuses non-ASCII text (a TypeError, i.e. a 500).
        if not query_id.isascii():
            return False
        stem, _, tag = query_id.rpartition(".")
        return bool(stem) and hmac.compare_digest(self._tag(stem, key_id), tag)
