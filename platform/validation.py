"""Readable validation for any pydantic model: YAML loading that rejects duplicate keys, and
``ValidationError`` turned into one :class:`~herd.platform.errors.ConfigError` naming the source
(file path or ``"<dict>"``), the field path (``nodes[1].num_cpus``) and the bad value.

Used by the cluster models (``herd.platform.config``) and by every spec module above them.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from herd.platform.errors import ConfigError

__all__ = [
    "field_error",
    "format_loc",
    "format_validation_error",
    "load_yaml_mapping",
    "load_yaml_model",
    "validate_model",
]

M = TypeVar("M", bound=BaseModel)
_VALUE_REPR_MAX = 80

# Keys of a PydanticCustomError's ctx that format_validation_error reads (see field_error).
_CTX_LOC = "herd_loc"
_CTX_VALUE = "herd_value"


def field_error(loc: tuple[str | int, ...], value: Any, message: str) -> PydanticCustomError:
    """An error for a cross-field check raised from a ``model_validator``.

    Pydantic reports errors raised in a model validator at the model's own location and with the
    whole model input as the value. Raise ``field_error(("nodes", 1, "region"), "eu", "...")``
    instead of ``ValueError`` so that :func:`format_validation_error` names the precise field path
    (relative to the model) and the bad value.
    """
    return PydanticCustomError("herd_field", "{herd_message}",
                               {"herd_message": message, _CTX_LOC: tuple(loc), _CTX_VALUE: value})


def format_loc(loc: tuple[str | int, ...]) -> str:
    """Render a pydantic loc as a path: ``("supervisors", 1, "children", 0, "restart")`` ->
    ``supervisors[1].children[0].restart``. Keys that are not identifiers render as ``['a b']``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":  # pydantic's marker for an invalid dict key
            out += "<key>"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_REPR_MAX else text[:_VALUE_REPR_MAX - 3] + "..."


def _unwrap_model(annotation: Any, part: str | int) -> Any:
    """The type found by stepping into ``annotation`` with one loc ``part`` (best effort)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _unwrap_model(args[0], part)
    if origin in (Union, types.UnionType):
        for arg in args:
            if arg is not type(None):
                found = _unwrap_model(arg, part)
                if found is not None:
                    return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field else None
    if isinstance(part, int) and origin in (list, tuple, set, frozenset) and args:
        return args[0]
    if isinstance(part, str) and origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    return None


def _model_at(model_cls: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The pydantic model class that holds the field at ``loc`` (best effort, for suggestions)."""
    current: Any = model_cls
    for part in loc:
        current = _unwrap_model(current, part)
        if current is None:
            return None
    while typing.get_origin(current) in (Annotated, Union, types.UnionType):
        models = [a for a in typing.get_args(current)
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        current = models[0] if models else typing.get_args(current)[0]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _describe(error: Mapping[str, Any], model_cls: type[BaseModel] | None
              ) -> tuple[tuple[str | int, ...], str, Any, bool]:
    """(loc, message, value, has_value) of one pydantic error dict."""
    loc = tuple(error.get("loc", ()))
    ctx = error.get("ctx") or {}
    kind = error.get("type")
    value = error.get("input")
    message = str(error.get("msg", "invalid value"))
    if _CTX_LOC in ctx:
        loc = loc + tuple(ctx[_CTX_LOC])
        value = ctx.get(_CTX_VALUE)
    if kind == "missing":
        return loc, "required field is missing", None, False
    if kind == "extra_forbidden":
        message = f"unknown field {loc[-1]!r}" if loc else "unknown field"
        holder = _model_at(model_cls, loc[:-1]) if model_cls and loc else None
        if holder is not None:
            allowed = sorted(holder.model_fields)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            message += f"; allowed fields: {', '.join(allowed)}"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return loc, message, value, True


def format_validation_error(err: ValidationError, source: str,
                            model_cls: type[BaseModel] | None = None,
                            hidden_loc: frozenset[str] = frozenset()) -> ConfigError:
    """Turn a pydantic ``ValidationError`` into one ``ConfigError``.

    The error's ``field`` and ``value`` are those of the first problem; its message lists every
    problem as ``path: message (got value)``. ``err.errors`` holds all of them as
    ``(field, message, value)`` tuples. Pass ``model_cls`` to get "did you mean" suggestions for
    unknown fields. ``hidden_loc`` names loc parts to leave out of paths (the tags pydantic adds
    for discriminated unions, e.g. ``static``/``dynamic``).
    """
    described = [_describe(e, model_cls) for e in err.errors()]
    if hidden_loc:
        described = [(tuple(p for p in loc if p not in hidden_loc), *rest)
                     for loc, *rest in described]
    if not described:  # pragma: no cover - pydantic always reports at least one error
        return ConfigError(str(err), source=source)
    lines = []
    for loc, message, value, has_value in described:
        got = f" (got {_short_repr(value)})" if has_value else ""
        lines.append((format_loc(loc) or "<root>", f"{message}{got}"))
    first_loc, _, first_value, _ = described[0]
    text = lines[0][1]
    if len(lines) > 1:
        more = "; ".join(f"{path}: {msg}" for path, msg in lines[1:])
        text += f"; {len(lines) - 1} more error(s): {more}"
    config_error = ConfigError(text, source=source, field=lines[0][0], value=first_value)
    config_error.errors = [(path, msg, d[2])
                           for (path, msg), d in zip(lines, described, strict=False)]
    return config_error


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode,
                       deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: let the default constructor report it
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark)
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping. An empty file is an empty mapping.

    Raises ``ConfigError`` for a missing or unreadable file, malformed YAML (with line and
    column), duplicate keys, or a top level that is not a mapping.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=source, value=source) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a YAML file", source=source,
                          value=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {exc}", source=source, value=source) from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _not_a_mapping(data, source)
    return data


def _not_a_mapping(data: Any, source: str) -> ConfigError:
    return ConfigError(f"top level must be a mapping of fields, got a {type(data).__name__} "
                       f"(got {_short_repr(data)})", source=source, field="<root>", value=data)


def _yaml_error(exc: yaml.YAMLError, source: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{context}: {problem}" if context else problem
    if mark is None:
        return ConfigError(f"malformed YAML: {detail}", source=source)
    line = mark.line + 1
    snippet = ""
    buffer = getattr(mark, "buffer", None)
    if buffer:
        lines = str(buffer).rstrip("\0").splitlines()
        if 0 <= mark.line < len(lines):
            snippet = lines[mark.line].strip()
    where = f"line {line}, column {mark.column + 1}"
    got = f" (line {line}: {snippet!r})" if snippet else ""
    error = ConfigError(f"malformed YAML at {where}: {detail}{got}", source=source,
                        value=snippet or None)
    error.line = line
    return error


def validate_model(model_cls: type[M], data: Any, source: str = "<dict>") -> M:
    """Validate ``data`` (a mapping) as ``model_cls``; any failure raises ``ConfigError``."""
    if not isinstance(data, Mapping):
        raise _not_a_mapping(data, source)
    try:
        return model_cls.model_validate(dict(data))
    except ValidationError as exc:
        raise format_validation_error(exc, source, model_cls) from None


def load_yaml_model(model_cls: type[M], path: str | Path) -> M:
    """Load the YAML file at ``path`` and validate it as ``model_cls``.

    All failures (missing/unreadable file, malformed YAML, wrong top level, validation) raise
    ``ConfigError`` naming the file, the field path and the bad value.
    """
    return validate_model(model_cls, load_yaml_mapping(path), source=str(path))
