"""The operator's secret: where it comes from, and the moving target's schedule key.

A moving target is only a moving target to someone who cannot predict it. Its schedule
(which pool member answers a query) is a keyed hash; an experiment may draw the key from
its seed, but a gateway's attacker can read the code, the seed's default and the
development secret, so a gateway that serves a moving target takes its key from the
operator only:

* ``--secret-file PATH`` (the file's text, surrounding whitespace dropped), else
* ``$MOVINGTARGET_SECRET``,

at least :data:`MIN_SECRET_CHARS` characters, never the public development value.
Without one ``movingtarget serve`` refuses to start, in one line. The same secret keys
the memory's fingerprints and the query ids (``--secret-file`` sets
``$MOVINGTARGET_SECRET`` for the process); the schedule's key is derived from it under
its own personalization, so it is independent of the fingerprint keys.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from movingtarget.errors import ConfigError
from movingtarget.memory.fingerprints.exact import DEVELOPMENT_SECRET

#: The shortest secret accepted (``openssl rand -hex 32`` writes 64 characters).
MIN_SECRET_CHARS = 16
ENV = "MOVINGTARGET_SECRET"
_HOW = "write a long random value in it (openssl rand -hex 32 > PATH)"
_HOW_ENV = "set it to a long random value (openssl rand -hex 32)"


def _checked(secret: str, where: str, how: str = _HOW) -> str:
    if not secret:
        raise ConfigError(f"{where} is empty; {how}")
    if secret == DEVELOPMENT_SECRET:
        raise ConfigError(f"{where} is the public development secret; {how}")
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{where} holds {len(secret)} characters; a secret needs at least "
            f"{MIN_SECRET_CHARS}: {how}"
        )
    return secret


def read_secret_file(path: Path) -> str:
    """The secret in ``path`` (its text, stripped), or one ConfigError naming the file
    and what is wrong (missing, not a file, unreadable, not text, empty, too short)."""
    where = f"--secret-file {path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not text; {_HOW}") from None
    if "\0" in text:
        raise ConfigError(f"{where}: not text; {_HOW}")
    return _checked(text, where)


def operator_secret(what: str) -> str:
    """``$MOVINGTARGET_SECRET`` (which ``--secret-file`` sets), checked; a ConfigError
    naming ``what`` needs it when it is unset, empty, public or short."""
    value = os.environ.get(ENV)
    if value is None or not value.strip():
        raise ConfigError(
            f"{what} needs a secret from the operator, or an attacker who reads the code "
            f"predicts it: pass --secret-file PATH (openssl rand -hex 32 > PATH) or set ${ENV}"
        )
    return _checked(value.strip(), f"${ENV}", _HOW_ENV)


def schedule_key(secret: str) -> bytes:
    """The moving target's schedule key from the operator's secret (its own
    personalization: knowing a fingerprint key gives nothing about it).

    >>> schedule_key("a" * 16) == schedule_key("a" * 16) != schedule_key("b" * 16)
    True
    """
    return hashlib.blake2b(secret.encode(), digest_size=32, person=b"mt-schedule").digest()
