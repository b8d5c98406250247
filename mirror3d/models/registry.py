"""A timm-style model registry: register factories by name with their metadata, build models by name.

    @register_model("og-net", input_kind="points", input_size=4096, paper_params=1_951_734)
    def og_net(num_classes: int = 751, **kwargs) -> nn.Module: ...

    model = create_model("og-net", num_classes=702, k=16)
    list_models("og-net*")            # ['og-net', 'og-net-deep', 'og-net-small']
    list_models(input_kind="image")   # ['cnn2d-small']
    model_info("og-net").input_kind   # 'points'

Each entry carries a :class:`ModelInfo` (like timm's ``pretrained_cfg``): what the model takes
(``input_kind`` "points" — ``model(xyz, rgb)`` on (B, N, 3) clouds — or "image" —
``model(images)`` on (B, 3, H, W)), its default input size (points per cloud, or (W, H)) and the
parameter count its paper reports, when the paper gives one. Code that feeds a model reads these
instead of guessing from the name.

Factories register when their module is imported. :func:`create_model`, :func:`model_info` and
:func:`list_models` first import the model packages listed in ``MODEL_PACKAGES`` so that every
built-in model is available without importing its module by hand.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib
from collections.abc import Callable
from typing import Any

__all__ = [
    "INPUT_KINDS",
    "MODEL_PACKAGES",
    "ModelInfo",
    "create_model",
    "get_model_factory",
    "is_model",
    "list_models",
    "model_info",
    "register_model",
]

#: Packages imported before a lookup; importing them registers their models.
MODEL_PACKAGES: tuple[str, ...] = ("mirror3d.models.ognet", "mirror3d.models.casl")

#: What a registered model can take as input.
INPUT_KINDS: tuple[str, ...] = ("points", "image")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Metadata of a registered model.

    Attributes:
        name: the registry name.
        module: the module defining the factory.
        input_kind: ``"points"`` (``model(xyz, rgb)``), ``"image"`` (``model(images)``), or None
            when the entry does not say.
        input_size: the default input: points per cloud (int) for "points", (W, H) for "image".
        paper_params: the parameter count the model's paper reports (None: no paper figure).
    """

    name: str
    module: str
    input_kind: str | None = None
    input_size: int | tuple[int, int] | None = None
    paper_params: int | None = None


_REGISTRY: dict[str, Callable[..., Any]] = {}
_INFO: dict[str, ModelInfo] = {}
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


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_metadata(name: str, input_kind: Any, input_size: Any, paper_params: Any
                    ) -> int | tuple[int, int] | None:
    where = f"register_model({name!r})"
    if input_kind is not None and input_kind not in INPUT_KINDS:
        raise ValueError(f"{where}: input_kind must be one of {INPUT_KINDS} or None, "
                         f"got {input_kind!r}")
    if input_size is not None:
        if input_kind is None:
            raise ValueError(f"{where}: input_size needs an input_kind")
        if input_kind == "points" and not _positive_int(input_size):
            raise ValueError(f"{where}: input_size of a points model is the number of points "
                             f"per cloud (a positive int), got {input_size!r}")
        if input_kind == "image":
            if not (isinstance(input_size, (tuple, list)) and len(input_size) == 2
                    and all(_positive_int(v) for v in input_size)):
                raise ValueError(f"{where}: input_size of an image model is (W, H), "
                                 f"two positive ints, got {input_size!r}")
            input_size = (int(input_size[0]), int(input_size[1]))
    if paper_params is not None and not _positive_int(paper_params):
        raise ValueError(f"{where}: paper_params must be a positive int or None, "
                         f"got {paper_params!r}")
    return input_size


def register_model(
    name: str,
    *,
    input_kind: str | None = None,
    input_size: int | tuple[int, int] | None = None,
    paper_params: int | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a model factory under ``name``, with its metadata (:class:`ModelInfo`).

    Re-registering the same factory (same module and qualified name, e.g. after a module reload)
    replaces it and its metadata; registering a different factory under a taken name raises
    ``ValueError``, as does metadata of the wrong form.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    input_size = _check_metadata(name, input_kind, input_size, paper_params)

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise ValueError(f"register_model({name!r}) must decorate a callable, got {fn!r}")
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(
                f"model name {name!r} is already registered to {old.__module__}.{old.__qualname__}"
            )
        _REGISTRY[name] = fn
        _INFO[name] = ModelInfo(name=name, module=fn.__module__, input_kind=input_kind,
                                input_size=input_size, paper_params=paper_params)
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


def model_info(name: str) -> ModelInfo:
    """The metadata registered with ``name`` (``ValueError`` listing close names if unknown)."""
    _import_model_packages()
    if name not in _INFO:
        raise _unknown(name)
    return _INFO[name]


def create_model(name: str, **cfg: Any) -> Any:
    """Build the model registered under ``name``; ``cfg`` goes to its factory as keywords."""
    return get_model_factory(name)(**cfg)


def list_models(pattern: str | None = None, module: str | None = None,
                input_kind: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered.

    Args:
        pattern: shell-style wildcard on the name (``fnmatch``), e.g. ``"og-net*"``.
        module: keep only factories defined in this module or package (dotted prefix),
            e.g. ``"mirror3d.models.ognet"``.
        input_kind: keep only models declaring this input kind ("points" or "image").
    """
    _import_model_packages()
    if input_kind is not None and input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS} or None, got {input_kind!r}")
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if module is not None:
        names = [
            n
            for n in names
            if _REGISTRY[n].__module__ == module or _REGISTRY[n].__module__.startswith(module + ".")
        ]
    if input_kind is not None:
        names = [n for n in names if _INFO[n].input_kind == input_kind]
    return names
