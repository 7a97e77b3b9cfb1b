"""A package's public names, each imported from its module when first used (PEP 562):
`actors` and `transport` load nothing at `import`, so a client command or `import
actors.messages` pays only for what it uses (docs/architecture.md, "Loading")."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_names(package: str, defined_in: Mapping[str, str], namespace: dict[str, Any],
               public: Iterable[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The package's module `__getattr__` and `__dir__`: a name in `defined_in` (name ->
    module) is imported from its module once (then kept in `namespace`, the package's
    globals), any other one is tried as a submodule."""

    def getattr_(name: str) -> Any:
        module = defined_in.get(name)
        if module is None and name.startswith("__"):  # (probes: `__wrapped__`, ...)
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if module is None:  # a submodule: `actors.messages` after `import actors`
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise  # one the submodule imports is missing: not this name's fault
                raise AttributeError(
                    f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # once: later lookups do not come here
        return value

    names = frozenset(public)

    def dir_() -> list[str]:
        return sorted({*namespace, *names})

    return getattr_, dir_
