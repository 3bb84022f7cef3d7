"""Compiling the few loops numpy cannot batch (hash-table probing, band hashing), and
loading them only when first needed."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])


def compiled(*signatures: str) -> Callable[[F], F]:
    """Compile eagerly for ``signatures`` (so a wrong argument type is an error, not a
    silent recompile), cached on disk where numba finds a writable place (next to the
    module or in the user's cache), else compiled once per process."""
    from numba import njit

    def wrap(fn: F) -> F:
        try:
            return cast(F, njit(list(signatures), cache=True)(fn))
        except RuntimeError:  # no writable cache location
            return cast(F, njit(list(signatures))(fn))

    return wrap


@functools.cache
def loops(module: str) -> ModuleType:
    """The module of compiled loops ``module``, imported on first use: numba and the
    cached loops take a few tenths of a second to load (compiling them the first time,
    about 1.5 s), which commands that keep no memory should not pay. Objects call this
    rather than hold the module, so they stay picklable."""
    return importlib.import_module(module)
