"""Namespaces whose names are imported on first use (PEP 562 ``__getattr__``).

``import deq_core`` must cost nothing (the app's first page, ``deq-lens --help`` and the
pure figure builders do not wait for torch, Captum, scikit-learn or pandas), so the
package and its public subpackages map each exported name to the module defining it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(namespace: dict[str, Any], exports: Mapping[str, str | tuple[str, str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose ``namespace`` (its ``globals()``) exports ``exports``.

    ``exports`` maps a public name to a module path, or to ``(module path, attribute)``
    where the public name differs; a relative path (``".solvers"``) is taken within the
    package. A name is imported once, then kept in the namespace.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = exports[name]
        module, attribute = target if isinstance(target, tuple) else (target, name)
        value = getattr(importlib.import_module(module, package), attribute)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
