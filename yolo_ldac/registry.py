"""Registries of named parts: criteria, pushes and compensations.

A registry maps a name to a class. It imports none of its plugins: the one list of plugin modules is
:data:`yolo_ldac.parts.PLUGIN_MODULES`, loaded the first time any registry is looked into, so
``from yolo_ldac.pruning.criteria import CRITERIA`` sees every criterion without import cycles.

Example:
    >>> from yolo_ldac.registry import Registry
    >>> r = Registry("widget")
    >>> @r.register("plain")
    ... class Plain:
    ...     '''A plain widget.'''
    >>> r.build("plain").__class__.__name__
    'Plain'
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

from yolo_ldac.errors import LDACError


class Registry(dict):
    """``name -> class`` for one kind of part (a ``dict``, so ``name in registry`` and ``registry[name]`` work)."""

    def __init__(self, kind: str, key: str | None = None):
        super().__init__()
        self.kind = kind  # e.g. "criterion"
        self.key = key or kind  # the configuration key that selects one, e.g. "criterion"

    # Lookups load the package's plugin list first (once); registering does not.
    def _load(self) -> None:
        from yolo_ldac.parts import load_plugins

        load_plugins()

    def __contains__(self, name: object) -> bool:
        self._load()
        return super().__contains__(name)

    def __getitem__(self, name: str):
        self._load()
        return super().__getitem__(name)

    def __iter__(self):
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def keys(self):
        self._load()
        return super().keys()

    def items(self):
        self._load()
        return super().items()

    def values(self):
        self._load()
        return super().values()

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator adding a part under ``name`` (sets ``cls.name``)."""

        def wrap(cls: type) -> type:
            cls.name = name
            dict.__setitem__(self, name, cls)
            return cls

        return wrap

    def get_class(self, name: Any) -> type:
        """The class registered as ``name``; an unknown name raises :class:`LDACError` with the closest match."""
        if not isinstance(name, str) or name not in self:
            names = sorted(self)
            close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise LDACError(f"unknown {self.key} '{name}'{hint} (available: {', '.join(names)})")
        return self[name]

    def build(self, name: str, **kwargs: Any):
        """Instantiate the part ``name`` with ``kwargs`` (each part takes the keys it knows, ignores the rest)."""
        return self.get_class(name)(**kwargs)

    def describe(self) -> list[tuple[str, str]]:
        """``(name, first line of the class docstring)`` for every part, sorted by name."""
        out = []
        for name in sorted(self):
            para = (self[name].__doc__ or "").strip().split("\n\n")[0]
            out.append((name, " ".join(line.strip() for line in para.splitlines())))
        return out
