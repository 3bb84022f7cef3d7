"""Registries by name, so configs and the command line reach every component."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from movingtarget.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory table for one box of the design (datasets, defenses, ...).

    Examples
    --------
    >>> shapes: Registry[object] = Registry("shape")
    >>> @shapes.register("square")
    ... class Square:
    ...     def __init__(self, side: float = 1.0) -> None:
    ...         self.side = side
    >>> shapes.create("square", side=2.0).side
    2.0
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a class or function under ``name``."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; a :class:`ConfigError` names the choices."""
        try:
            return self._factories[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._factories, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}{hint}; choose one of: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, **params: Any) -> T:
        """Build the component registered as ``name`` with keyword ``params``."""
        factory = self.get(name)
        try:
            return factory(**params)
        except TypeError as exc:
            raise ConfigError(f"{self.kind} {name!r}: {exc}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
