"""Compiling the few loops numpy cannot batch (hash-table probing, band hashing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from numba import njit

F = TypeVar("F", bound=Callable[..., Any])


def compiled(*signatures: str) -> Callable[[F], F]:
    """Compile eagerly for ``signatures`` (so a wrong argument type is an error, not a
    silent recompile), cached on disk where numba finds a writable place (next to the
    module or in the user's cache), else compiled once per process."""

    def wrap(fn: F) -> F:
        try:
            return cast(F, njit(list(signatures), cache=True)(fn))
        except RuntimeError:  # no writable cache location
            return cast(F, njit(list(signatures))(fn))

    return wrap
