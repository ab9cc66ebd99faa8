"""Lazy package exports: heavy submodules (torch, the training loop) load on first use."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """Return a module-level ``__getattr__`` resolving ``name`` from ``table[name]``.

    Args:
        package: the package's ``__name__``.
        table: exported name -> module that defines it.

    Returns:
        The ``__getattr__`` function (PEP 562); resolved values are cached in
        the package namespace, so each name is imported once.
    """

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
