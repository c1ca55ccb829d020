"""Run a function right after a module is first imported, without editing the module's files.

The mods that change vLLM or Triton behaviour at run time (gpu-mem-util-gb,
instanttensor-hybrid-draft-loader, fix-qwen3-coder-next) install a `.pth` file that imports their hook
module at interpreter start; the hook registers here, and the module it targets is patched the moment
it is imported (by vLLM, a Ray worker, anything). Nothing is imported early, and the installed
package's files stay as they were, so a hook survives a vLLM upgrade that moves lines around and fails
loudly only when the names it wraps are gone.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from types import ModuleType

_hooks: dict[str, list[Callable[[ModuleType], None]]] = {}


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name not in _hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, _hooks.pop(name))
                return spec
        return None


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, fns: list[Callable[[ModuleType], None]]):
        self.inner, self.fns = inner, fns

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        for fn in self.fns:
            fn(module)


def after_import(name: str, fn: Callable[[ModuleType], None]) -> None:
    """Call fn(module) once `name` has been imported (at once if it already is)."""
    if name in sys.modules:
        fn(sys.modules[name])
        return
    _hooks.setdefault(name, []).append(fn)
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
