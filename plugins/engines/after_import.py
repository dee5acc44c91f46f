"""Run a function right after a module is imported, in whichever process imports it.

verl imports medsage's plugin (and, on the CPU route, ``medsage.plugins.engines.verl_cpu``) in every
one of its processes: the driver, the trainer, each rank, the rollout server, the agent-loop and reward
workers. medsage's training engine extends verl's FSDP engine, whose import (transformers' model
classes, peft, scikit-learn through transformers' generation utilities) costs about 5 s of one core,
and only the trainer ranks use it. Registering it when verl's own worker module is imported keeps that
cost where verl pays it anyway instead of in every process (on two cores, where start-up is a chain of
such imports, the difference is tens of seconds).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType


class _Loader(importlib.abc.Loader):
    """The module's own loader, then ``then`` on the executed module."""

    def __init__(self, loader, then: Callable[[ModuleType], None]):
        self.loader, self.then = loader, then

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.then(module)

    def __getattr__(self, name):  # get_source, is_package, ...: tracebacks and inspect read the module through them
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, then: Callable[[ModuleType], None]):
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once, and so the lookup below finds the module's own spec
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, self.then)
        return spec


def when_imported(name: str, then: Callable[[ModuleType], None]) -> None:
    """Call ``then(module)`` once ``name`` has been imported: now if it already is, else right after its import."""
    if name in sys.modules:
        then(sys.modules[name])
    elif not any(isinstance(f, _Finder) and f.name == name and f.then is then for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(name, then))
