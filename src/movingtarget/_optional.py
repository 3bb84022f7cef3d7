"""Optional dependencies: which extra installs each one, and one clear error when missing.

The base install runs experiments; serving, the approximate memories, PyTorch models and
per-input attacks need extras. A missing one is reported as a
:class:`MissingDependency` (a :class:`~movingtarget.errors.ConfigError`) naming the extra,
never as a raw ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from movingtarget.errors import ConfigError

#: Top-level module -> the extra of ``movingtarget`` that installs it.
EXTRAS = {
    "fastapi": "serve",
    "starlette": "serve",
    "pydantic": "serve",
    "uvicorn": "serve",
    "httptools": "serve",
    "uvloop": "serve",
    "httpx": "serve",
    "prometheus_client": "serve",
    "faiss": "memory",
    "redis": "memory",
    "torch": "torch",
    "art": "attacks",
    "packaging": "attacks",
    "onnxruntime": "models",
    "onnx": "models",
    "skops": "models",
    "skl2onnx": "models",
    "distributed": "cluster",
    "dask": "cluster",
}


class MissingDependency(ConfigError):
    """An optional dependency is not installed; the message names the extra.

    Examples
    --------
    >>> print(missing_dependency(ModuleNotFoundError(name="faiss"), "neighbour memory"))
    neighbour memory needs 'faiss', which is not installed: pip install 'movingtarget[memory]'
    """


def missing_dependency(exc: ImportError, what: str, wanted: str = "") -> MissingDependency | None:
    """The :class:`MissingDependency` for ``exc`` if it is an optional dependency, else None.

    ``wanted`` is the module that was imported, for an error that does not name it.
    """
    module = (exc.name or wanted).split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return None
    return MissingDependency(
        f"{what} needs {module!r}, which is not installed: pip install 'movingtarget[{extra}]'"
    )


def require(module: str, what: str) -> ModuleType:
    """Import ``module``; a :class:`MissingDependency` naming its extra if it is missing.

    Examples
    --------
    >>> require("numpy", "arrays").__name__
    'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        error = missing_dependency(exc, what, module)
        if error is None:
            raise
        raise error from None
