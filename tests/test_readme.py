"""The README, read as a new user reads it: its Python example runs as written, and
every ``movingtarget`` command it shows names a real subcommand with real options."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands() -> list[list[str]]:
    """Each ``movingtarget ...`` line of the README's shell blocks (continuations joined)
    and inline code, without its placeholder forms (``movingtarget COMMAND --help``)."""
    lines = [
        line.split("#", 1)[0]
        for block in blocks("bash")
        for line in block.replace("\\\n", " ").splitlines()
    ]
    lines += re.findall(r"`(movingtarget [^`]+)`", README)
    out = []
    for line in lines:
        for part in line.split("&&"):
            words = shlex.split(part)
            placeholder = len(words) > 1 and words[1].isupper()
            if words[:1] == ["movingtarget"] and not placeholder:
                out.append(words[1:])
    return out


def test_the_python_example_runs_as_written(tmp_path: Path) -> None:
    (example,) = blocks("python")
    proc = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # exact memorization: at most the pool's mistakes, each once, so r~ <= r exactly
    assert 0 <= float(proc.stdout.strip()) <= 0.02


def test_the_readme_shows_every_command() -> None:
    shown = {c[0] for c in commands() if c}
    assert shown >= {"run", "list", "report", "serve", "keys", "attack", "audit"}, shown


@pytest.mark.parametrize("words", commands(), ids=lambda w: " ".join(w)[:40] or "run")
def test_every_readme_command_is_accepted(words: list[str]) -> None:
    # each command's options exist: its --help, with the same subcommand, parses them
    options = [w.split("=")[0] for w in words if w.startswith("--")]
    sub = [w for w in words[:2] if not w.startswith("-")]
    sub = sub[:2] if sub[:1] == ["keys"] else sub[:1]
    proc = subprocess.run(
        [sys.executable, "-m", "movingtarget", *sub, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for option in options:
        assert re.search(rf"(^|[\s,]){re.escape(option)}\b", proc.stdout), (option, sub)
