"""Errors a user can act on.

Every error that reaches a user (a bad file, config field, CLI flag or HTTP body)
is a :class:`MovingTargetError`: the CLI and the gateway print its message alone,
never a traceback.
"""

from __future__ import annotations


class MovingTargetError(ValueError):
    """Base class of all user-facing errors; the message names what is wrong.

    Examples
    --------
    The CLI prints the message as one line (no traceback) and exits with status 2:

    >>> from movingtarget.defenses import build_defense
    >>> try:
    ...     build_defense("no-such-defense", None)
    ... except MovingTargetError as err:
    ...     print(type(err).__name__)
    ConfigError
    """


class NoticeWarning(UserWarning):
    """A warning meant for the user (a trusted pickle loaded, a broken plugin): the CLI
    prints its message alone, on one line."""


class DataError(MovingTargetError):
    """A dataset file is missing, unreadable, corrupt, or holds bad values."""


class ConfigError(MovingTargetError):
    """An experiment config (or CLI option) names an unknown or invalid value."""


class InputError(MovingTargetError):
    """A query batch has the wrong shape, dtype, or non-finite values."""


class Unavailable(MovingTargetError):
    """A service a component needs (a memory or key store) cannot be reached: an outage,
    not a bad request. The gateway answers 503 with ``Retry-After`` and logs the detail;
    the client is told only that the service is unavailable."""


class TaskFailed(MovingTargetError):
    """Deployments of an experiment raised; the message names them (the finished ones
    are kept in the results folder for ``--resume``)."""
