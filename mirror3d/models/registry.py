"""A timm-style model registry: register factories by name, build models by name.

    @register_model("og-net")
    def og_net(num_classes: int = 751, **kwargs) -> nn.Module: ...

    model = create_model("og-net", num_classes=702, k=16)
    list_models("og-net*")  # ['og-net', 'og-net-deep', 'og-net-small']

Factories register when their module is imported. :func:`create_model` and :func:`list_models`
first import the model packages listed in ``MODEL_PACKAGES`` so that every built-in model is
available without importing its module by hand.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from typing import Any

__all__ = [
    "MODEL_PACKAGES",
    "create_model",
    "get_model_factory",
    "is_model",
    "list_models",
    "register_model",
]

#: Packages imported before a lookup; importing them registers their models.
MODEL_PACKAGES: tuple[str, ...] = ("mirror3d.models.ognet", "mirror3d.models.casl")

_REGISTRY: dict[str, Callable[..., Any]] = {}
_imported = False


def _import_model_packages() -> None:
    global _imported
    if _imported:
        return
    _imported = True  # set first: a package importing this module must not recurse
    try:
        for name in MODEL_PACKAGES:
            importlib.import_module(name)
    except BaseException:
        _imported = False
        raise


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a model factory under ``name``.

    Re-registering the same factory (same module and qualified name, e.g. after a module reload)
    replaces it; registering a different factory under a taken name raises ``ValueError``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise ValueError(f"register_model({name!r}) must decorate a callable, got {fn!r}")
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(
                f"model name {name!r} is already registered to {old.__module__}.{old.__qualname__}"
            )
        _REGISTRY[name] = fn
        return fn

    return decorator


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=5, cutoff=0.4)
    hint = f"closest registered names: {close}" if close else f"registered names: {sorted(_REGISTRY)}"
    return ValueError(f"unknown model name {name!r}; {hint}")


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    _import_model_packages()
    return name in _REGISTRY


def get_model_factory(name: str) -> Callable[..., Any]:
    """The factory registered under ``name`` (``ValueError`` listing close names if unknown)."""
    _import_model_packages()
    if name not in _REGISTRY:
        raise _unknown(name)
    return _REGISTRY[name]


def create_model(name: str, **cfg: Any) -> Any:
    """Build the model registered under ``name``; ``cfg`` goes to its factory as keywords."""
    return get_model_factory(name)(**cfg)


def list_models(pattern: str | None = None, module: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered.

    Args:
        pattern: shell-style wildcard on the name (``fnmatch``), e.g. ``"og-net*"``.
        module: keep only factories defined in this module or package (dotted prefix),
            e.g. ``"mirror3d.models.ognet"``.
    """
    _import_model_packages()
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if module is not None:
        names = [
            n
            for n in names
            if _REGISTRY[n].__module__ == module or _REGISTRY[n].__module__.startswith(module + ".")
        ]
    return names
