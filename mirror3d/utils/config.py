"""Typed dataclass configs: YAML load/save, dotted overrides, validation.

A config is a (nested) ``@dataclass``. Supported field types::

    int  float  bool  str  pathlib.Path  Literal[...]  X | None
    tuple[int, int] (fixed length)  tuple[float, ...]  list[int] / list[str] / list[float]
    a nested config dataclass (a "section")

Field metadata adds checks and help text::

    sigma: float = field(default=7000.0, metadata={"range": (0.0, None), "help": "..."})
    mode: str = field(default="a", metadata={"choices": ["a", "b"]})

``range`` bounds are inclusive, ``None`` means unbounded; for tuples and lists every element is
checked (and ``choices`` likewise). ``metavar`` overrides the CLI placeholder (e.g. ``"W,H"``). A
dataclass may define ``validate(self)`` for cross-field checks; it runs after the fields are
loaded (nested sections first) and may raise ``ValueError``.

Values reach a config from three places, in this order: the dataclass defaults, a YAML file, and
dotted overrides (``--render.image_size 64,128``, ``--train.lr=1e-3``, ``seed=3``). Override values
are text: booleans take true/false/1/0/yes/no/on/off, tuples and lists are comma-separated, and
``none``/``null`` clears an optional field. Values from YAML or Python keep their types; a string
given for a non-string field is parsed as override text (this also covers PyYAML reading ``1e-3``
as a string). Ints reject non-integral numbers (1.5) but take integral floats (64.0, as Tune's
quantised spaces produce); floats take ints; bools never take arbitrary strings; NaN is rejected.

Configs are plain mutable dataclasses, but every function here returns a *new*, validated object:
:func:`set_by_dotted` and :func:`update_config` never modify their input. Ray Tune sets values by
dotted name with :func:`update_config` (all keys at once, cross-field checks once).

Every problem raises :class:`ConfigError` (a ``ValueError``) with one line naming the dotted key,
the offending value and what was expected; unknown keys come with the closest valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
import pathlib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from mirror3d.utils.errors import UserError

__all__ = [
    "ConfigError",
    "ConfigField",
    "dump_yaml",
    "config_fields",
    "config_from_dict",
    "config_to_dict",
    "flatten_config",
    "format_value",
    "get_by_dotted",
    "load_config",
    "parse_overrides",
    "save_config",
    "set_by_dotted",
    "update_config",
    "validate_config",
]


class ConfigError(UserError, ValueError):
    """A config key, value or file is invalid. The message is one line, meant for users (the
    CLI exits 2; :mod:`mirror3d.utils.errors`)."""


# --------------------------------------------------------------------------------------------
# Field types
# --------------------------------------------------------------------------------------------

_TRUE_WORDS = ("true", "1", "yes", "on")
_FALSE_WORDS = ("false", "0", "no", "off")
_NONE_WORDS = ("none", "null", "~")


@dataclass(frozen=True)
class _Type:
    """A parsed field annotation.

    kind: "int" | "float" | "bool" | "str" | "path" | "literal" | "optional" | "tuple"
          (fixed length, ``items``) | "vartuple" | "list" (element type ``inner``) | "section".
    """

    kind: str
    inner: _Type | None = None
    items: tuple[_Type, ...] = ()
    choices: tuple[Any, ...] = ()
    cls: type | None = None

    @property
    def base(self) -> _Type:
        """The type without ``| None``."""
        return self.inner if self.kind == "optional" else self

    def describe(self) -> str:
        k = self.kind
        if k == "optional":
            return f"{self.inner.describe()} or none"
        if k == "tuple":
            return f"tuple[{', '.join(t.describe() for t in self.items)}]"
        if k == "vartuple":
            return f"tuple[{self.inner.describe()}, ...]"
        if k == "list":
            return f"list[{self.inner.describe()}]"
        if k == "literal":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if k == "section":
            return f"a mapping (config section {self.cls.__name__})"
        return k

    def is_str_like(self) -> bool:
        """Whether a Python ``str`` is already a value of this type (no text parsing)."""
        b = self.base
        return b.kind in ("str", "path") or (
            b.kind == "literal" and any(isinstance(c, str) for c in b.choices)
        )


_SCALAR_TYPES = {int: "int", float: "float", bool: "bool", str: "str"}
_type_cache: dict[Any, _Type] = {}


def _parse_annotation(tp: Any, where: str) -> _Type:
    try:
        cached = _type_cache.get(tp)
    except TypeError:  # unhashable annotation
        cached = None
    if cached is not None:
        return cached
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp in _SCALAR_TYPES:
        out = _Type(_SCALAR_TYPES[tp])
    elif isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
        out = _Type("path", cls=tp)
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
        out = _Type("section", cls=tp)
    elif origin is Literal:
        out = _Type("literal", choices=tuple(args))
    elif origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(rest) == len(args):
            raise TypeError(f"{where}: unsupported config type {tp!r} (only `X | None` unions)")
        out = _Type("optional", inner=_parse_annotation(rest[0], where))
    elif origin in (tuple, list):
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            out = _Type("vartuple", inner=_parse_element(args[0], tp, where))
        elif origin is tuple and args and Ellipsis not in args:
            out = _Type("tuple", items=tuple(_parse_element(a, tp, where) for a in args))
        elif origin is list and len(args) == 1:
            out = _Type("list", inner=_parse_element(args[0], tp, where))
        else:
            raise TypeError(f"{where}: unsupported config type {tp!r}")
    else:
        raise TypeError(f"{where}: unsupported config type {tp!r}")
    try:
        _type_cache[tp] = out
    except TypeError:
        pass
    return out


def _parse_element(tp: Any, outer: Any, where: str) -> _Type:
    t = _parse_annotation(tp, where)
    if t.kind not in ("int", "float", "bool", "str", "path", "literal"):
        raise TypeError(f"{where}: unsupported element type in {outer!r} (scalars only)")
    return t


@dataclass(frozen=True)
class _FieldInfo:
    name: str
    type: _Type
    field: dataclasses.Field

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.field.metadata

    def has_default(self) -> bool:
        return (
            self.field.default is not dataclasses.MISSING
            or self.field.default_factory is not dataclasses.MISSING
        )

    def default(self) -> Any:
        if self.field.default is not dataclasses.MISSING:
            return self.field.default
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return dataclasses.MISSING


_fields_cache: dict[type, dict[str, _FieldInfo]] = {}


def _fields(cls: type) -> dict[str, _FieldInfo]:
    """The init fields of a config dataclass, by name, with parsed types (cached)."""
    out = _fields_cache.get(cls)
    if out is not None:
        return out
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception as e:  # unresolvable string annotation
        raise TypeError(f"cannot resolve the field types of {cls.__qualname__}: {e}") from e
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        out[f.name] = _FieldInfo(f.name, _parse_annotation(hints[f.name], f"{cls.__name__}.{f.name}"), f)
    _fields_cache[cls] = out
    return out


def _section_class(t: _Type) -> type | None:
    return t.base.cls if t.base.kind == "section" else None


# --------------------------------------------------------------------------------------------
# Values: formatting, parsing, checking
# --------------------------------------------------------------------------------------------

_MISSING = dataclasses.MISSING


def format_value(value: Any) -> str:
    """A value as override text, such that parsing the text gives the value back:
    ``(64, 128)`` → ``"64,128"``, ``True`` → ``"true"``, ``None`` → ``"none"``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _shown(value: Any) -> str:
    return repr(str(value)) if isinstance(value, pathlib.PurePath) else repr(value)


def _type_error(key: str, t: _Type, value: Any, example: Any = _MISSING) -> ConfigError:
    kind = t.base.kind
    hint = ""
    if kind == "bool":
        hint = " (true/false/1/0/yes/no)"
    elif kind not in ("literal", "section"):
        if example is not _MISSING and example is not None and format_value(example) != "":
            hint = f" (e.g. {format_value(example)})"
        elif kind in ("tuple", "vartuple", "list"):
            hint = " (comma-separated)"
    return ConfigError(f"{key}: expected {t.describe()}{hint}, got {_shown(value)}")


class _Bad(Exception):
    """Internal: a value does not fit a type (turned into a ConfigError by the caller)."""


def _scalar_from_text(s: str, t: _Type) -> Any:
    k = t.kind
    if k == "str":
        return s
    s = s.strip()
    if k == "path":
        return (t.cls or pathlib.Path)(s)
    if k == "bool":
        low = s.lower()
        if low in _TRUE_WORDS:
            return True
        if low in _FALSE_WORDS:
            return False
        raise _Bad
    if k == "int":
        try:
            return int(s)
        except ValueError:
            pass
        try:
            return _scalar_from_value(float(s), t)
        except ValueError:
            raise _Bad from None
    if k == "float":
        try:
            return _scalar_from_value(float(s), t)
        except ValueError:
            raise _Bad from None
    if k == "literal":
        for c in t.choices:
            if isinstance(c, str):
                if s == c:
                    return c
            else:
                try:
                    v = _scalar_from_text(s, _Type(_SCALAR_TYPES[type(c)]))
                except (_Bad, KeyError):
                    continue
                if v == c:
                    return c
        raise _Bad
    raise _Bad


def _scalar_from_value(v: Any, t: _Type) -> Any:
    k = t.kind
    if isinstance(v, str) and not t.is_str_like():
        return _scalar_from_text(v, t)
    if k == "str":
        if isinstance(v, str):
            return v
        raise _Bad
    if k == "path":
        if isinstance(v, (str, os.PathLike)):
            return (t.cls or pathlib.Path)(v)
        raise _Bad
    is_bool = isinstance(v, bool) or type(v).__name__ in ("bool_", "bool")  # numpy bools too
    if k == "bool":
        if is_bool:
            return bool(v)
        if isinstance(v, numbers.Integral) and int(v) in (0, 1):
            return bool(int(v))
        raise _Bad
    if k == "int":
        if is_bool:
            raise _Bad
        if isinstance(v, numbers.Integral):
            return int(v)
        if isinstance(v, numbers.Real) and math.isfinite(float(v)) and float(v).is_integer():
            return int(v)
        raise _Bad
    if k == "float":
        if is_bool or not isinstance(v, numbers.Real) or math.isnan(float(v)):
            raise _Bad
        return float(v)
    if k == "literal":
        for c in t.choices:
            if type(c) is type(v) and c == v:
                return c
        if isinstance(v, str):
            return _scalar_from_text(v, t)
        raise _Bad
    raise _Bad


def _split_items(s: str) -> list[str]:
    s = s.strip()
    if len(s) >= 2 and s[0] + s[-1] in ("()", "[]"):
        s = s[1:-1].strip()
    return [] if s == "" else [p.strip() for p in s.split(",")]


def _coerce(v: Any, t: _Type, text: bool) -> Any:
    """``v`` as a value of type ``t`` (raises ``_Bad``). ``text``: ``v`` is override text, where
    ``none``/``null`` clears an optional field even if it holds strings."""
    k = t.kind
    if k == "optional":
        if v is None:
            return None
        if isinstance(v, str) and v.strip().lower() in _NONE_WORDS and (text or not t.is_str_like()):
            return None
        return _coerce(v, t.inner, text)
    if k == "section":
        raise _Bad
    if k in ("tuple", "vartuple", "list"):
        if isinstance(v, str):
            items = _split_items(v)
        elif isinstance(v, (list, tuple)):
            items = list(v)
        else:
            raise _Bad
        if k == "tuple":
            if len(items) != len(t.items):
                raise _Bad
            out = [_scalar_from_value(x, et) for x, et in zip(items, t.items)]
        else:
            out = [_scalar_from_value(x, t.inner) for x in items]
        return out if k == "list" else tuple(out)
    return _scalar_from_value(v, t)


def _range_text(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]"
    if lo is not None:
        return f">= {lo}"
    return f"<= {hi}"


def _check_leaf(key: str, info: _FieldInfo, value: Any) -> None:
    """Range and choices checks from the field metadata (after type coercion)."""
    if value is None:
        return
    elems = list(value) if isinstance(value, (tuple, list)) else [value]
    every = "every element " if isinstance(value, (tuple, list)) else ""
    rng = info.meta.get("range")
    if rng is not None:
        lo, hi = rng
        for x in elems:
            if (lo is not None and x < lo) or (hi is not None and x > hi):
                raise ConfigError(
                    f"{key}: {every}must be {_range_text(lo, hi)}, got {_shown(value)}"
                )
    choices = info.meta.get("choices")
    if choices is not None:
        for x in elems:
            if x not in choices:
                raise ConfigError(
                    f"{key}: {every}must be one of {', '.join(repr(c) for c in choices)}, "
                    f"got {_shown(value)}"
                )


def _coerce_leaf(key: str, info: _FieldInfo, v: Any, text: bool = False) -> Any:
    try:
        value = _coerce(v, info.type, text)
    except _Bad:
        raise _type_error(key, info.type, v, info.default()) from None
    _check_leaf(key, info, value)
    return value


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for name, info in _fields(cls).items():
        sub = _section_class(info.type)
        if sub is not None:
            out.extend(_leaf_keys(sub, f"{prefix}{name}."))
        else:
            out.append(prefix + name)
    return out


def _suggest(key: str, valid: list[str]) -> list[str]:
    scored = {k: difflib.SequenceMatcher(None, key, k).ratio() for k in valid}
    last = key.rsplit(".", 1)[-1]
    for k in valid:  # a right field name in the wrong section: "--image_size" → render.image_size
        r = difflib.SequenceMatcher(None, last, k.rsplit(".", 1)[-1]).ratio()
        if r >= 0.8:
            scored[k] = max(scored[k], r)
    good = sorted((k for k in valid if scored[k] >= 0.6), key=lambda k: -scored[k])
    if not good:
        return []
    best = scored[good[0]]
    return [k for k in good if scored[k] >= best - 0.1][:3]


def _unknown_key(root: type, key: str) -> ConfigError:
    valid = _leaf_keys(root)
    msg = f"unknown config key {key!r}"
    close = _suggest(key, valid)
    if close:
        return ConfigError(f"{msg}; did you mean: {', '.join(close)}?")
    # list the keys of the deepest section the key does reach
    cls, prefix = root, ""
    for part in key.split(".")[:-1]:
        info = _fields(cls).get(part)
        sub = _section_class(info.type) if info else None
        if sub is None:
            break
        cls, prefix = sub, f"{prefix}{part}."
    names = ", ".join(prefix + n for n in _fields(cls))
    return ConfigError(f"{msg}; valid keys{' in ' + prefix[:-1] if prefix else ''}: {names}")


def _resolve_key(root: type, key: str) -> tuple[list[str], _FieldInfo]:
    """The path and field of a dotted key (a leaf or a section)."""
    parts = key.split(".")
    cls = root
    info = None
    for part in parts:
        if cls is None:
            raise _unknown_key(root, key)
        info = _fields(cls).get(part)
        if info is None:
            raise _unknown_key(root, key)
        cls = _section_class(info.type)
    return parts, info


# --------------------------------------------------------------------------------------------
# Trees: nested dicts of (partial) config values
# --------------------------------------------------------------------------------------------


def _instance_tree(obj: Any) -> dict[str, Any]:
    """A dataclass instance as a nested dict of its (Python-typed) init-field values."""
    out = {}
    for name in _fields(type(obj)):
        v = getattr(obj, name)
        out[name] = _instance_tree(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
    return out


def _merge(base: dict, new: Mapping) -> dict:
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _coerce_tree(root: type, cls: type, data: Any, prefix: str) -> dict:
    """Check and coerce a partial nested mapping for ``cls`` (keys, types, ranges, choices)."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        if not isinstance(data, cls):
            raise ConfigError(
                f"{prefix[:-1] or 'config'}: expected {cls.__name__}, got {type(data).__name__}"
            )
        data = _instance_tree(data)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{prefix[:-1] or 'config'}: expected a mapping (config section {cls.__name__}), "
            f"got {_shown(data)}"
        )
    fields = _fields(cls)
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        info = fields.get(k) if isinstance(k, str) else None
        if info is None:
            raise _unknown_key(root, key)
        out[k] = _coerce_entry(root, key, info, v, text=False)
    return out


def _coerce_entry(root: type, key: str, info: _FieldInfo, v: Any, text: bool) -> Any:
    """A leaf value, or a section given as a mapping / instance / ``None`` (optional only)."""
    sub = _section_class(info.type)
    if sub is None:
        return _coerce_leaf(key, info, v, text)
    if v is None or (isinstance(v, str) and v.strip().lower() in _NONE_WORDS):
        if info.type.kind != "optional":
            raise _type_error(key, info.type, v)
        return None
    if isinstance(v, str):
        raise ConfigError(
            f"{key}: is a config section; set its fields instead, "
            f"e.g. {_leaf_keys(sub, key + '.')[0]}"
        )
    return _coerce_tree(root, sub, v, key + ".")


def _build(cls: type, tree: Mapping, prefix: str) -> Any:
    """A validated ``cls`` from a partial tree (already checked) plus the field defaults."""
    kwargs = {}
    for name, info in _fields(cls).items():
        key = prefix + name
        given = tree.get(name, _MISSING)
        sub = _section_class(info.type)
        if sub is None:
            if given is _MISSING:
                given = info.default()
                if given is _MISSING:
                    raise ConfigError(f"missing required config key {key!r}")
            kwargs[name] = _coerce_leaf(key, info, given)
            continue
        default = info.default()
        if given is None or (given is _MISSING and default is None):
            kwargs[name] = None
            continue
        base = _instance_tree(default) if dataclasses.is_dataclass(default) else {}
        kwargs[name] = _build(sub, _merge(base, given if given is not _MISSING else {}), key + ".")
    try:
        obj = cls(**kwargs)
        check = getattr(obj, "validate", None)
        if callable(check):
            check()
    except ValueError as e:  # includes ConfigError from validate()
        where = f"{prefix[:-1]}: " if prefix else ""
        raise ConfigError(f"{where}{e}") from e
    return obj


def _set_in_tree(tree: dict, parts: list[str], value: Any) -> None:
    node = tree
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    last = parts[-1]
    if isinstance(value, Mapping) and isinstance(node.get(last), Mapping):
        node[last] = _merge(node[last], value)
    else:
        node[last] = value


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def config_from_dict(cls: type, data: Mapping[str, Any] | None) -> Any:
    """A validated ``cls`` from a nested mapping (missing keys take the defaults).

    Leaves may be Python values or override text; tuples may be given as lists."""
    tree = _coerce_tree(cls, cls, {} if data is None else data, "")
    return _build(cls, tree, "")


def _to_plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return config_to_dict(v)
    if isinstance(v, (tuple, list)):
        return [_to_plain(x) for x in v]
    if isinstance(v, pathlib.PurePath):
        return str(v)
    return v


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A config as a plain nested dict that YAML can hold (tuples → lists, paths → str)."""
    return {name: _to_plain(getattr(cfg, name)) for name in _fields(type(cfg))}


def validate_config(cfg: Any) -> Any:
    """Check an instance built in code (types, ranges, ``validate``); returns a normalised copy
    (e.g. ints in float fields become floats)."""
    return config_from_dict(type(cfg), _instance_tree(cfg))


def _read_yaml(path: str | os.PathLike) -> dict:
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}" if not p.exists() else f"config file is not a file: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"cannot parse config file {p}: {e.problem}{where}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot parse config file {p}: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {p}: expected a mapping of config keys at the top level, "
            f"got {type(data).__name__}"
        )
    return data


def parse_overrides(cls: type, overrides: Iterable[str]) -> list[tuple[str, str]]:
    """Split override tokens into ``(dotted key, text)`` pairs, checking that the keys exist.

    Accepted forms: ``--key value``, ``--key=value``, ``key=value``, and a bare ``--flag`` for a
    bool field (meaning true)."""
    tokens = list(overrides)
    out = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok.startswith("--") and len(tok) > 2:
            body = tok[2:]
            if "=" in body:
                key, val = body.split("=", 1)
                _resolve_key(cls, key)
            else:
                key = body
                _, info = _resolve_key(cls, key)
                nxt = tokens[i] if i < len(tokens) else None
                is_bool = info.type.base.kind == "bool"
                if nxt is None or (nxt.startswith("--") and len(nxt) > 2):
                    if not is_bool:
                        raise ConfigError(f"{key}: missing value for --{key}")
                    val = "true"
                else:
                    val = nxt
                    i += 1
        elif "=" in tok and not tok.startswith("-"):
            key, val = tok.split("=", 1)
            _resolve_key(cls, key)
        else:
            raise ConfigError(
                f"unexpected argument {tok!r}; overrides look like --key value or --key=value"
            )
        out.append((key, val))
    return out


def _override_tree(cls: type, pairs: Iterable[tuple[str, Any]], text: bool) -> dict:
    tree: dict = {}
    for key, value in pairs:
        parts, info = _resolve_key(cls, key)
        _set_in_tree(tree, parts, _coerce_entry(cls, key, info, value, text))
    return tree


def load_config(
    cls: type,
    path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    overrides: Iterable[str] | None = None,
    sections: Mapping[str, str | os.PathLike] | None = None,
) -> Any:
    """Defaults ← YAML file(s) ``path`` (if given; later files win; an entry may also be an
    already-read mapping) ← dotted ``overrides`` → a validated ``cls``.

    overrides: tokens such as ``["--render.image_size", "64,128", "--train.lr=1e-3"]``.
    sections: ``{section key: YAML file}`` read into that section before the files of ``path``
    (how a composite job takes other jobs' presets: ``{"casl": "configs/train-casl/smoke.yaml"}``).
    """
    tree: dict = {}
    for key, spath in (sections or {}).items():
        parts, info = _resolve_key(cls, key)
        sub = _section_class(info.type)
        if sub is None:
            raise ConfigError(f"{key}: not a config section, cannot take the file {spath}")
        try:
            raw = spath if isinstance(spath, Mapping) else _read_yaml(spath)
            data = _coerce_tree(cls, sub, raw, key + ".")
        except ConfigError as e:
            raise ConfigError(f"config file {spath}: {e}") from None
        nested: dict = {}
        _set_in_tree(nested, parts, data)
        tree = _merge(tree, nested)
    paths = [] if path is None else [path] if isinstance(path, (str, os.PathLike, Mapping)) \
        else list(path)
    for one in paths:
        data = one if isinstance(one, Mapping) else _read_yaml(one)
        try:
            tree = _merge(tree, _coerce_tree(cls, cls, data, ""))
        except ConfigError as e:
            raise ConfigError(f"config file {one}: {e}") from None
    if overrides:
        tree = _merge(tree, _override_tree(cls, parse_overrides(cls, overrides), text=True))
    return _build(cls, tree, "")


def save_config(cfg: Any, path: str | os.PathLike) -> pathlib.Path:
    """Write ``cfg`` as YAML (parent directories are created); :func:`load_config` reads it back
    to an equal object. Returns the path."""
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(dump_yaml(cfg))
    return p


def dump_yaml(cfg: Any) -> str:
    """``cfg`` as YAML text (fields in declaration order)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def get_by_dotted(cfg: Any, key: str) -> Any:
    """The value at a dotted key (a leaf value or a whole section)."""
    parts, _ = _resolve_key(type(cfg), key)
    v = cfg
    for p in parts:
        if v is None:  # an optional section that is unset
            return None
        v = getattr(v, p)
    return v


def update_config(cfg: Any, updates: Mapping[str, Any]) -> Any:
    """A new validated config with the dotted keys of ``updates`` set (``cfg`` is unchanged).

    Values may be Python values (as from Ray Tune) or override text; a section key takes a
    mapping or an instance. Cross-field ``validate`` runs once, after all keys are set."""
    cls = type(cfg)
    tree = _merge(_instance_tree(cfg), _override_tree(cls, updates.items(), text=False))
    return _build(cls, tree, "")


def set_by_dotted(cfg: Any, key: str, value: Any) -> Any:
    """A new validated config with one dotted key set; ``cfg`` itself is not modified."""
    return update_config(cfg, {key: value})


def flatten_config(cfg: Any) -> dict[str, Any]:
    """All leaf values by dotted key, e.g. ``{"render.image_size": (64, 128), ...}``. An unset
    optional section appears as one key with value ``None``."""
    out: dict[str, Any] = {}
    for name in _fields(type(cfg)):
        v = getattr(cfg, name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out.update({f"{name}.{k}": x for k, x in flatten_config(v).items()})
        else:
            out[name] = v
    return out


@dataclass(frozen=True)
class ConfigField:
    """One settable leaf of a config class, as the CLI shows it."""

    key: str
    type: str  # e.g. "tuple[int, int]"
    metavar: str  # e.g. "W,H" or "INT,INT"
    default: Any  # dataclasses.MISSING when required
    help: str
    range: tuple[Any, Any] | None
    choices: tuple[Any, ...] | None
    is_bool: bool

    def describe(self) -> str:
        """Type and constraints, e.g. ``"tuple[int, int]; in [1, 4096]"`` (a Literal's type
        already lists its values)."""
        notes = [] if self.type.startswith("one of") else [self.type]
        if self.range is not None:
            notes.append(_range_text(*self.range))
        if self.choices is not None:
            notes.append("one of " + ", ".join(format_value(c) for c in self.choices))
        return "; ".join(notes)


def _metavar(t: _Type) -> str:
    b = t.base
    if b.kind == "literal":
        mv = "{" + ",".join(format_value(c) for c in b.choices) + "}"
    elif b.kind == "bool":
        mv = "{true,false}"
    elif b.kind == "tuple":
        mv = ",".join(_metavar(x) for x in b.items)
    elif b.kind in ("vartuple", "list"):
        mv = f"{_metavar(b.inner)},..."
    else:
        mv = b.kind.upper()
    return mv


def config_fields(cls: type) -> list[ConfigField]:
    """Every leaf field of ``cls`` (nested sections flattened), in declaration order."""

    def walk(c: type, base: Any, prefix: str) -> list[ConfigField]:
        out = []
        for name, info in _fields(c).items():
            default = getattr(base, name) if base is not None else info.default()
            sub = _section_class(info.type)
            if sub is not None:
                out.extend(walk(sub, default if dataclasses.is_dataclass(default) else None, f"{prefix}{name}."))
                continue
            rng = info.meta.get("range")
            ch = info.meta.get("choices")
            out.append(
                ConfigField(
                    key=prefix + name,
                    type=info.type.describe(),
                    metavar=info.meta.get("metavar") or _metavar(info.type),
                    default=default,
                    help=info.meta.get("help", ""),
                    range=tuple(rng) if rng is not None else None,
                    choices=tuple(ch) if ch is not None else None,
                    is_bool=info.type.base.kind == "bool",
                )
            )
        return out

    return walk(cls, None, "")
