"""Open a store from a URL, so configs, the CLI and the gateway name stores as text.

==============================  ==========================================================
URL                             store
==============================  ==========================================================
``memory://``                   :class:`InProcessStore`: this process only
``sqlite:///PATH``              :class:`SQLiteStore`: one machine, survives restarts
                                (``sqlite:///rel/path.db``, ``sqlite:////abs/path.db``)
``redis://[:PW@]HOST:PORT/DB``  :class:`RedisStore`: shared between processes and hosts
                                (also ``rediss://`` for TLS and ``unix://`` sockets)
``bloom://``                    :class:`~movingtarget.memory.stores.bloom.BloomStore`: this process,
                                membership only (seen or not), about 5 bytes a key
==============================  ==========================================================

Bounds and options may also ride in the query string: ``?ttl=3600000&capacity=1000000
&namespace=gw`` for every scheme, ``&durability=power`` for SQLite and Redis (what an
acknowledged write survives: :mod:`movingtarget.memory.stores.durability`), and
``&synchronous=full`` for SQLite (its lower-level form). ``bloom://`` takes
``capacity`` (keys it is sized for, default 1,000,000), ``fp`` (its false-positive rate
at that size, default ``1e-6``) and ``ttl``, and has no namespaces. A keyword argument and a query
parameter that disagree are a :class:`ConfigError`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from movingtarget.errors import ConfigError
from movingtarget.memory.stores.base import Store
from movingtarget.memory.stores.durability import check_durability, sqlite_synchronous
from movingtarget.memory.stores.inprocess import InProcessStore
from movingtarget.memory.stores.redaction import redact, redact_safely

SCHEMES = ("memory", "bloom", "sqlite", "redis", "rediss", "unix")
_COMMON = ("ttl", "capacity", "namespace")
_SQLITE_ONLY = ("synchronous", "durability")
_REDIS_ONLY = ("durability",)
_UNIX_ONLY = ("db", "durability")  # unix:///path/redis.sock?db=N
_BLOOM_ONLY = ("fp",)
BLOOM_DEFAULT_CAPACITY = 1_000_000


def _options(url: str, scheme: str, query: str) -> dict[str, str]:
    extra = {
        "sqlite": _SQLITE_ONLY,
        "unix": _UNIX_ONLY,
        "bloom": _BLOOM_ONLY,
        "redis": _REDIS_ONLY,
        "rediss": _REDIS_ONLY,
    }
    allowed = _COMMON + extra.get(scheme, ())
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"store URL {url!r}: cannot read its query string {query!r}") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise ConfigError(
                f"store URL {url!r}: unknown option {name!r}; {scheme}:// takes {allowed}"
            )
        options[name] = value
    return options


def _merge(url: str, name: str, given: Any, from_url: str | None, integer: bool) -> Any:
    if from_url is None:
        return given
    value: Any = from_url
    if integer:
        try:
            value = int(from_url)
        except ValueError:
            raise ConfigError(
                f"store URL {url!r}: {name} must be a positive integer, got {from_url!r}"
            ) from None
    if given is not None and given != value:
        raise ConfigError(f"store URL {url!r} sets {name}={value!r} but the config says {given!r}")
    return value


def open_store(
    url: str,
    *,
    namespace: str | None = None,
    ttl: int | None = None,
    capacity: int | None = None,
) -> Store:
    """The store that ``url`` names.

    ``ttl`` (in the units of the ``now`` passed to ``observe``) and ``capacity`` (distinct
    keys kept) are optional bounds; ``namespace`` (default ``"mt"``) separates memories
    sharing one back end. Every counting store applies the same TTL and eviction policy (see
    ``docs/memory.md``).

    >>> import numpy as np
    >>> open_store("memory://").observe(np.array([7, 7], np.uint64), np.arange(2)).tolist()
    [0, 1]
    >>> open_store("memory://?capacity=10").capacity
    10
    """
    if not isinstance(url, str):
        raise ConfigError(f"store URL must be text, got {url!r}")
    shown = url  # never echo a password in an error
    try:
        shown = redact(url)
    except ValueError:
        shown = "<unreadable URL>"
    try:
        parts = urlsplit(url.strip())
    except ValueError as err:
        raise ConfigError(f"store URL {shown!r}: {err}") from None
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise ConfigError(f"store URL {shown!r}: unknown scheme {scheme!r}; use one of {SCHEMES}")
    options = _options(shown, scheme, parts.query)
    ttl = _merge(shown, "ttl", ttl, options.get("ttl"), integer=True)
    capacity = _merge(shown, "capacity", capacity, options.get("capacity"), integer=True)
    namespace = _merge(shown, "namespace", namespace, options.get("namespace"), integer=False)
    namespace = namespace or "mt"

    if scheme == "memory":
        if parts.netloc or parts.path.strip("/"):
            raise ConfigError(f"store URL {shown!r}: write memory:// with nothing after it")
        if options.get("namespace") is not None:
            raise ConfigError(f"store URL {shown!r}: memory:// has no namespaces")
        return InProcessStore(ttl=ttl, capacity=capacity)

    if scheme == "bloom":
        from movingtarget.memory.stores.bloom import BloomStore

        if parts.netloc or parts.path.strip("/"):
            raise ConfigError(f"store URL {shown!r}: write bloom:// with only ?options after it")
        if options.get("namespace") is not None:
            raise ConfigError(f"store URL {shown!r}: bloom:// has no namespaces")
        try:
            fp = float(options.get("fp", "1e-6"))
        except ValueError:
            raise ConfigError(
                f"store URL {shown!r}: fp must be a number in (0, 0.5), got {options['fp']!r}"
            ) from None
        return BloomStore(
            BLOOM_DEFAULT_CAPACITY if capacity is None else capacity, false_positive=fp, ttl=ttl
        )

    if scheme == "sqlite":
        from movingtarget.memory.stores.sqlite_store import SQLiteStore

        # sqlite:///rel.db -> "rel.db", sqlite:////abs.db -> "/abs.db" (SQLAlchemy style)
        if parts.netloc or not parts.path.startswith("/") or not parts.path[1:]:
            raise ConfigError(
                f"store URL {shown!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        synchronous = options.get("synchronous")
        if "durability" in options:
            implied = sqlite_synchronous(check_durability(options["durability"], shown))
            if synchronous is not None and synchronous != implied:
                raise ConfigError(
                    f"store URL {shown!r}: durability={options['durability']} means "
                    f"synchronous={implied}, but synchronous={synchronous} is given too"
                )
            synchronous = implied
        return SQLiteStore(
            parts.path[1:],
            namespace=namespace,
            ttl=ttl,
            capacity=capacity,
            synchronous=synchronous or "normal",
        )

    from movingtarget.memory.stores.redis_store import RedisStore

    if scheme == "unix":
        db = options.get("db", "0")
        if not parts.path or not db.isdigit():
            raise ConfigError(f"store URL {shown!r}: write unix:///path/to/redis.sock?db=N")
        client_url = f"unix://{parts.netloc}{parts.path}?db={db}"
    else:
        if not parts.hostname:
            raise ConfigError(f"store URL {shown!r}: write redis://HOST:PORT/DB")
        try:
            parts.port  # noqa: B018 -- urlsplit checks the port only when it is read
        except ValueError:
            raise ConfigError(f"store URL {shown!r}: the port must be a number") from None
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ConfigError(f"store URL {shown!r}: the database must be a number, got {db!r}")
        # the client gets the URL without our options (they are not redis-py's)
        client_url = url.split("?", 1)[0]
    return RedisStore(
        client_url,
        namespace=namespace,
        ttl=ttl,
        capacity=capacity,
        durability=options.get("durability", "process"),
    )


def backend_of(url: str, what: str) -> tuple[str, str]:
    """Where the store ``url`` lives, for state kept beside the memory (the gateway's
    corrections and labeling queue): ``("memory", "")``, ``("sqlite", PATH)`` or
    ``("redis", CLIENT_URL)``. Query options (bounds, durability) belong to the memory's
    fingerprints and are not carried over. ``what`` names the state in errors.

    >>> backend_of("sqlite:///m.db?ttl=5", "corrections")
    ('sqlite', 'm.db')
    >>> backend_of("redis://h:6379/2", "corrections")
    ('redis', 'redis://h:6379/2')
    """
    if not isinstance(url, str):
        raise ConfigError(f"store URL must be text, got {url!r}")
    try:
        shown = redact(url)
        parts = urlsplit(url.strip())
        if parts.scheme not in ("unix",) and parts.netloc:
            parts.port  # noqa: B018 -- urlsplit checks the port only when it is read
    except ValueError:
        raise ConfigError(f"store URL {redact_safely(url)!r}: cannot read it") from None
    scheme = parts.scheme
    if scheme == "memory":
        return "memory", ""
    if scheme == "sqlite":
        if parts.netloc or not parts.path.startswith("/") or not parts.path[1:]:
            raise ConfigError(
                f"store URL {shown!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return "sqlite", parts.path[1:]
    if scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ConfigError(f"store URL {shown!r}: write redis://HOST:PORT/DB")
        return "redis", url.strip().split("?", 1)[0]
    if scheme == "unix":
        db = dict(parse_qsl(parts.query)).get("db", "0")
        if not parts.path or not db.isdigit():
            raise ConfigError(f"store URL {shown!r}: write unix:///path/to/redis.sock?db=N")
        return "redis", f"unix://{parts.netloc}{parts.path}?db={db}"
    if scheme == "bloom":
        raise ConfigError(
            f"store URL {shown!r}: bloom:// remembers whether a fingerprint was seen, and "
            f"cannot keep {what}: use memory://, sqlite:///PATH or redis://HOST:PORT/DB"
        )
    raise ConfigError(f"store URL {shown!r}: unknown scheme {scheme!r}; use one of {SCHEMES}")
