"""Public names of a package, imported on first use (PEP 562), so that importing the package
imports only what is used."""

from __future__ import annotations

from importlib import import_module


def exports(package: str, public: dict[str, str], eager: tuple[str, ...] = ()):
    """``__getattr__``, ``__dir__`` and ``__all__`` of ``package``.

    ``public`` maps each public name to the module (relative to ``package``) that defines it;
    ``eager`` lists the names the package defines itself.
    """
    names = sorted([*eager, *public])

    def __getattr__(name: str):
        if name in public:
            value = getattr(import_module(f"{package}.{public[name]}"), name)
            setattr(import_module(package), name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return names

    return __getattr__, __dir__, names
