"""One generic registry for rewards, benchmarks, sources, synthesizers, eval backends and trajectory scorers.

Built-ins and third-party plugins arrive the same way: an entry point in the group
``medsage.<kind>`` (medsage's own are declared in its pyproject.toml). A lab adds a reward by
installing a package with::

    [project.entry-points."medsage.rewards"]
    my_reward = "my_lab.rewards:my_reward"

and selecting ``reward=my_reward``; nothing in medsage is edited. In-process code (tests,
notebooks) may also use the ``@REWARDS.register("name")`` decorator. Entry points are loaded
lazily: naming one imports only that module.
"""

from __future__ import annotations

import difflib
from importlib.metadata import EntryPoint, entry_points
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class Registry(Generic[T]):
    """Names -> objects for one entry-point group, loaded on first use."""

    def __init__(self, kind: str):
        self.kind = kind
        self.group = f"medsage.{kind}"
        self._local: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator for in-process registration; a name taken by another object is an error."""

        def deco(obj: T) -> T:
            if name in self._local and self._local[name] is not obj:
                raise RegistryError(f"{self.kind}: {name!r} is already registered to {self._local[name]!r}")
            self._local[name] = obj
            return obj

        return deco

    def unregister(self, name: str) -> None:
        self._local.pop(name, None)

    def _entry_points(self) -> dict[str, EntryPoint]:
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.group):
            other = found.get(ep.name)
            if other is not None and other.value != ep.value:
                raise RegistryError(
                    f"{self.kind}: {ep.name!r} is declared twice in entry-point group {self.group!r}: "
                    f"{other.value!r} and {ep.value!r}; uninstall one of the packages"
                )
            found[ep.name] = ep
        return found

    def names(self) -> list[str]:
        return sorted(set(self._local) | set(self._entry_points()))

    def __contains__(self, name: str) -> bool:
        return name in self._local or name in self._entry_points()

    def get(self, name: str) -> T:
        if name in self._local:
            return self._local[name]
        eps = self._entry_points()
        if name in eps:
            try:
                return eps[name].load()
            except Exception as err:
                raise RegistryError(f"{self.kind}: {name!r} is installed as {eps[name].value!r} "
                                    f"but failed to import: {type(err).__name__}: {err}") from err
        installed = sorted(set(self._local) | set(eps))
        close = difflib.get_close_matches(name, installed, n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(installed) if installed else "none"
        raise RegistryError(
            f"unknown {self.kind} {name!r}.{hint} Installed: {listing}. "
            f"Plugins are declared in the entry-point group {self.group!r}."
        )


REWARDS: Registry = Registry("rewards")
BENCHMARKS: Registry = Registry("benchmarks")
SOURCES: Registry = Registry("sources")
SYNTHESIZERS: Registry = Registry("synthesizers")
EVAL_BACKENDS: Registry = Registry("eval_backends")
SCORERS: Registry = Registry("scorers")  # trajectory scorers for the consistency reward (A.4)
