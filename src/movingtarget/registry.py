"""Registries by name, so configs and the command line reach every component.

Besides the names the package registers, a registry reaches

* **plugins**: installed packages that declare entry points in the registry's group
  (``movingtarget.attacks``, ``.models``, ``.datasets``, ``.mechanisms``, ``.defenses``),
  each named as configs will name it and pointing at the factory (for ``defenses``, at
  a composition's text). They are loaded at the registry's first use, once; a plugin
  that fails to load is reported in one line (:class:`PluginWarning`) and the others
  still load;
* **``module:attribute``** names (``mypkg.models:build``): a user's own factory, imported
  when it is used, for anything no plugin covers.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from movingtarget.errors import ConfigError, NoticeWarning

T = TypeVar("T")

#: Who provided the names the package registers itself.
BUILTIN = "movingtarget"

_ATTRIBUTE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class PluginWarning(NoticeWarning):
    """A plugin failed to load (or clashed with a registered name); the others loaded."""


def is_import_path(name: str) -> bool:
    """Whether ``name`` reads as ``module:attribute``.

    >>> is_import_path("mypkg.models:build"), is_import_path("logistic")
    (True, False)
    """
    return bool(_ATTRIBUTE.match(name))


def import_object(path: str, what: str) -> Any:
    """The object ``module:attribute`` names; one :class:`ConfigError` if it cannot be had.

    >>> import_object("math:floor", "factory")(2.5)
    2
    >>> import_object("no_such_module_here:build", "model.factory")
    Traceback (most recent call last):
    ...
    movingtarget.errors.ConfigError: model.factory 'no_such_module_here:build': cannot import ...
    """
    if not is_import_path(path):
        raise ConfigError(f"{what} {path!r}: write module:attribute, e.g. mypkg.models:build")
    module_name, attribute = path.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{what} {path!r}: cannot import module {module_name!r} ({exc}); is it installed "
            "or on PYTHONPATH?"
        ) from None
    except Exception as exc:  # the user's module failed while importing: say so, briefly
        raise ConfigError(
            f"{what} {path!r}: importing {module_name!r} failed ({type(exc).__name__}: {exc})"
        ) from None
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} {path!r}: module {module_name!r} has no {attribute!r}")
        obj = getattr(obj, part)
    return obj


class Plugins:
    """The entry points of one group, loaded once, on first use.

    ``origins`` says which distribution provided each name; ``errors`` holds one line per
    entry point that failed.
    """

    def __init__(self, group: str) -> None:
        self.group = group
        self.loaded = False
        self.origins: dict[str, str] = {}
        self.errors: list[str] = []

    def load(self, add: Callable[[str, Any], None], taken: Callable[[str], bool]) -> None:
        """Load every entry point of the group once, giving each to ``add(name, obj)``."""
        if self.loaded:
            return
        self.loaded = True  # first: a plugin that uses the registry while loading is fine
        try:
            points = list(importlib.metadata.entry_points(group=self.group))
        except Exception as exc:  # broken metadata on the path: no plugins, said once
            self._fail(f"cannot read the installed entry points ({type(exc).__name__}: {exc})")
            return
        for ep in sorted(points, key=lambda e: (e.name, e.value)):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown package"
            where = f"plugin {dist}: {self.group} entry point {ep.name!r} ({ep.value})"
            if taken(ep.name):
                self._fail(f"{where}: the name is already registered; skipped")
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # any failure of a third party's code is theirs
                self._fail(f"{where} failed to load: {type(exc).__name__}: {exc}")
                continue
            add(ep.name, obj)
            self.origins[ep.name] = dist

    def _fail(self, line: str) -> None:
        line = " ".join(line.split())
        self.errors.append(line)
        warnings.warn(line, PluginWarning, stacklevel=4)


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

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        #: Entry points of this group (``movingtarget.models``) add names on first use.
        self.plugins = Plugins(group) if group else None

    def _ready(self) -> dict[str, Callable[..., T]]:
        if self.plugins is not None and not self.plugins.loaded:
            self.plugins.load(self._add_plugin, self._factories.__contains__)
        return self._factories

    def _add_plugin(self, name: str, obj: Any) -> None:
        if not callable(obj):
            raise_type = type(obj).__name__
            assert self.plugins is not None
            self.plugins._fail(
                f"plugin {self.kind} {name!r} is a {raise_type}, not a class or function; skipped"
            )
            return
        self._factories[name] = obj

    def origin(self, name: str) -> str:
        """Who provided ``name``: ``movingtarget``, or the plugin's distribution."""
        self._ready()
        if self.plugins is not None and name in self.plugins.origins:
            return self.plugins.origins[name]
        return BUILTIN

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a class or function under ``name``."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name`` (or imported, for ``module:attribute``); a
        :class:`ConfigError` names the choices."""
        factories = self._ready()
        try:
            return factories[name]
        except KeyError:
            if is_import_path(name):
                factory = import_object(name, f"{self.kind} factory")
                if not callable(factory):
                    raise ConfigError(
                        f"{self.kind} factory {name!r} is a {type(factory).__name__}, not a "
                        "function or class"
                    ) from None
                return factory
            close = difflib.get_close_matches(name, factories, n=1)
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
        """Registered names (the package's and plugins'), sorted."""
        return sorted(self._ready())

    def __contains__(self, name: object) -> bool:
        return name in self._ready()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class NamedTexts(Mapping[str, str]):
    """A read-only name -> text table that plugins extend, as :class:`Registry` does
    (the named compositions: ``memorize-abstain`` -> its composition text).

    >>> table = NamedTexts({"a": "argmax"})
    >>> table["a"], list(table), table.origin("a")
    ('argmax', ['a'], 'movingtarget')
    """

    def __init__(self, texts: Mapping[str, str], group: str | None = None) -> None:
        self._texts = dict(texts)
        self.plugins = Plugins(group) if group else None

    def _ready(self) -> dict[str, str]:
        if self.plugins is not None and not self.plugins.loaded:
            self.plugins.load(self._add_plugin, self._texts.__contains__)
        return self._texts

    def _add_plugin(self, name: str, obj: Any) -> None:
        if not isinstance(obj, str):
            assert self.plugins is not None
            self.plugins._fail(
                f"plugin composition {name!r} is a {type(obj).__name__}, not the text of a "
                "composition; skipped"
            )
            return
        self._texts[name] = obj

    def origin(self, name: str) -> str:
        """Who provided ``name``: ``movingtarget``, or the plugin's distribution."""
        self._ready()
        if self.plugins is not None and name in self.plugins.origins:
            return self.plugins.origins[name]
        return BUILTIN

    def __getitem__(self, name: str) -> str:
        return self._ready()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ready())

    def __len__(self) -> int:
        return len(self._ready())
