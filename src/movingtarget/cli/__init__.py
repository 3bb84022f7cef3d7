"""The command line: ``movingtarget run | list | report``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperArgument, TyperOption

from movingtarget.errors import ConfigError


def command_group(name: str, help: str) -> typer.Typer:
    """A ``typer.Typer`` as every command group here is made: help when called bare, no
    shell-completion options, errors printed plainly (user errors are one line)."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


def output_folder(path: Path, flag: str = "--out") -> Path:
    """Create the results folder ``path`` and check that a file can be written in it.

    Commands call it before any work (training, attacking), so a bad folder costs one
    clear :class:`~movingtarget.errors.ConfigError`, not a traceback after minutes.

    Examples
    --------
    >>> import tempfile
    >>> afile = Path(tempfile.mkdtemp()) / "afile"
    >>> _ = afile.write_text("")
    >>> output_folder(afile / "sub")
    Traceback (most recent call last):
    ...
    movingtarget.errors.ConfigError: --out .../afile/sub: .../afile is a file, not a folder
    """
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise ConfigError(f"{flag} {path}: {ancestor} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{flag} {path}: cannot write results there ({exc.strerror or exc})"
        ) from None
    return path


#: Metavars by value type, as classic command lines print them (``--out PATH``).
_METAVARS = {int: "N", float: "NUMBER", str: "TEXT", Path: "PATH"}


def plain_metavars(command: Any) -> Any:
    """Give every option of ``command`` (and its subcommands) a plain metavar.

    Typer prints ``--out <path>`` and ``config <str>``; classic command lines print
    ``--out PATH`` and ``CONFIG``, and flags with no value at all. Metavars written on
    an option are kept. Returns ``command``.
    """
    for param in command.params:
        if isinstance(param, TyperOption) and not param.is_flag and param.metavar is None:
            annotation = param.type_descriptor.annotation
            item = getattr(annotation, "__args__", (annotation,))[0]  # list[str] -> str
            param.metavar = _METAVARS.get(item, "VALUE")
        elif isinstance(param, TyperArgument):
            param.metavar = param.metavar or (param.name or "value").upper()
            # an argument's metavar already says what it is: no "<str>" beside it
            # (set on the instance: Typer has no setting for either)
            setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010
            usage = param.metavar if param.required else f"[{param.metavar}]"
            setattr(param, "_usage_display_name", lambda usage=usage: usage)  # noqa: B010
    for sub in getattr(command, "commands", {}).values():
        plain_metavars(sub)
    return command
