"""The memory box's layout: every module imports alone, and no imports go in a circle.

Two checks, since neither sees everything: each module is imported first, alone, in a
fresh interpreter (what a user's first ``import`` does, so a circle that only bites in
one import order fails here), and the imports between the box's modules, read from the
source (module level, inside functions and under ``TYPE_CHECKING`` alike), form no
circle and keep the layering that ``movingtarget/memory/__init__.py`` describes.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import movingtarget.memory

ROOT = Path(movingtarget.memory.__file__).parent
PACKAGE = "movingtarget.memory"

#: What ``movingtarget.memory`` exported before it was split: still exported.
EXPORTS = {
    "BloomStore",
    "Calibration",
    "ExactFingerprint",
    "Fingerprint",
    "InProcessStore",
    "NeighbourIndex",
    "NeighbourMemory",
    "PCAEncoder",
    "PenultimateEncoder",
    "RandomProjectionEncoder",
    "RedisStore",
    "RobustFingerprint",
    "SQLiteStore",
    "Store",
    "calibrate_radius",
    "calibrate_robust",
    "canonical",
    "measure_robust",
    "occurrences_before",
    "open_store",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((PACKAGE, *parts))] = path
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The box's modules that ``name`` imports anywhere in its source (doctests aside),
    each with the packages that importing it runs first (its ``__init__`` files), less
    ``name``'s own packages (being imported already when ``name`` runs)."""
    tree = ast.parse(MODULES[name].read_text())
    named: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named.add(node.module)
            named.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
    own = {name.rsplit(".", i)[0] for i in range(name.count(".") + 1)}
    found = set()
    for target in named & MODULES.keys():
        parts = target.split(".")
        chain = {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        found |= {m for m in chain if m in MODULES} - own
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_box_has_its_two_halves() -> None:
    names = set(MODULES)
    assert {f"{PACKAGE}.fingerprints", f"{PACKAGE}.stores"} <= names
    flat = {n for n in names if n.count(".") == 2}
    # at the top: the two halves, the shared key helpers, and what is neither
    assert flat == {
        f"{PACKAGE}.{m}"
        for m in ("_keys", "fingerprints", "stores", "tenancy", "corrections", "asked")
    }


def test_no_import_circle_between_the_modules() -> None:
    graph = {name: _imports(name) for name in MODULES}
    assert _circles(graph) == []


def test_the_fingerprints_import_no_store() -> None:
    for name in MODULES:
        if name.startswith(f"{PACKAGE}.fingerprints"):
            stores = {m for m in _imports(name) if m.startswith(f"{PACKAGE}.stores")}
            assert not stores, f"{name} imports {sorted(stores)}"


def test_modules_inside_the_box_import_by_module_path() -> None:
    # a package __init__ imports its children; nothing else goes through one, so the
    # order the __init__ files run in cannot make a circle
    packages = {n for n, p in MODULES.items() if p.name == "__init__.py"}
    for name, path in MODULES.items():
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in packages:
                pytest.fail(f"{name} imports from the package {node.module}")


def test_every_module_imports_first_and_alone_in_a_fresh_interpreter() -> None:
    def fresh(name: str) -> tuple[str, int, str]:
        done = subprocess.run(
            [sys.executable, "-c", f"import {name}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return name, done.returncode, done.stderr[-2000:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [r for r in pool.map(fresh, sorted(MODULES)) if r[1] != 0]
    assert failed == [], "\n\n".join(f"{n}:\n{err}" for n, _, err in failed)


def test_the_box_still_exports_what_it_did() -> None:
    assert set(movingtarget.memory.__all__) == EXPORTS
    for name in sorted(EXPORTS - {"RedisStore"}):  # RedisStore needs the redis extra
        assert getattr(movingtarget.memory, name) is not None
    assert movingtarget.memory.stores.Store is movingtarget.memory.Store
    assert movingtarget.memory.fingerprints.ExactFingerprint is movingtarget.memory.ExactFingerprint
