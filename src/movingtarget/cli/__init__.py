"""The command line: ``movingtarget run | list | report``."""

from __future__ import annotations

import typer


def command_group(name: str, help: str) -> typer.Typer:
    """A ``typer.Typer`` as every command group here is made: help when called bare, no
    shell-completion options, errors printed plainly (user errors are one line)."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
