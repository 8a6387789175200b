"""Cluster configuration: pydantic v2 models, YAML loading, and readable validation errors.

Every failure to load or validate a config raises :class:`herd.platform.errors.ConfigError`
naming the source (file path or ``"<dict>"``), the field path (``nodes[1].num_cpus``) and the
bad value. The helpers :func:`load_yaml_model`, :func:`validate_model`,
:func:`format_validation_error` and :func:`field_error` are generic over any pydantic model and
are meant to be reused by other spec modules (e.g. app specs).

Example::

    cfg = ClusterConfig.from_yaml("configs/cluster-local.yaml")
    ray_system_config = cfg.health_check.to_system_config()
    for spec in cfg.worker_specs():   # one NodeSpec per worker node (``count`` expanded)
        ...
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from herd.platform.errors import ConfigError

__all__ = [
    "ClusterConfig",
    "HealthCheckConfig",
    "NodeSpec",
    "TimeoutConfig",
    "field_error",
    "format_loc",
    "format_validation_error",
    "load_yaml_mapping",
    "load_yaml_model",
    "validate_model",
]

M = TypeVar("M", bound=BaseModel)

# Ray label values: at most 63 characters, alphanumerics, '-', '_' or '.', starting and ending
# with an alphanumeric.
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]+$")
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
_HOST_PORT = re.compile(rf"^{_HOST}:(?P<port>[0-9]{{1,5}})$")
_RAY_CLIENT = re.compile(rf"^ray://{_HOST}:(?P<port>[0-9]{{1,5}})$")
_DNS = re.compile(r"^dns:(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(?P<port>[0-9]{1,5}))?$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_VALUE_REPR_MAX = 80

# Keys of a PydanticCustomError's ctx that format_validation_error reads (see field_error).
_CTX_LOC = "herd_loc"
_CTX_VALUE = "herd_value"


# --------------------------------------------------------------------------------------------
# Generic helpers (any pydantic model)
# --------------------------------------------------------------------------------------------

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
    config_error.errors = [(path, msg, d[2]) for (path, msg), d in zip(lines, described)]
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


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

_PositiveInt = Annotated[int, Field(gt=0)]
_PositiveSeconds = Annotated[float, Field(gt=0)]
_NonNegativeFloat = Annotated[float, Field(ge=0)]


class HealthCheckConfig(BaseModel):
    """Ray's GCS node health check (how fast a dead node is detected). Set on the head node.

    The defaults (1000/500/500/3) detect a SIGKILLed node in ~1.2 s on the test machines;
    Ray's own defaults (5000/3000/10000/5) take ~14 s.
    """

    model_config = ConfigDict(extra="forbid")

    initial_delay_ms: _PositiveInt = 1000
    period_ms: _PositiveInt = 500
    timeout_ms: _PositiveInt = 500
    failure_threshold: _PositiveInt = 3

    def to_system_config(self) -> dict[str, int]:
        """The keys for ``ray.init(_system_config=...)`` / ``ray start --system-config``."""
        return {
            "health_check_initial_delay_ms": self.initial_delay_ms,
            "health_check_period_ms": self.period_ms,
            "health_check_timeout_ms": self.timeout_ms,
            "health_check_failure_threshold": self.failure_threshold,
        }

    def to_env(self) -> dict[str, str]:
        """The same settings as ``RAY_health_check_*`` environment variables (for ``ray start``)."""
        return {f"RAY_{key}": str(value) for key, value in self.to_system_config().items()}

    def expected_detection_s(self) -> float:
        """Rough upper bound, in seconds, on how long Ray takes to declare a dead node dead.

        ``failure_threshold`` consecutive checks must fail, one every ``period_ms``, and the
        last one may wait ``timeout_ms`` before failing:
        ``(period_ms * failure_threshold + timeout_ms) / 1000``. Excludes ``initial_delay_ms``
        (only relevant right after a node starts) and the time herd's membership poll adds.
        """
        return (self.period_ms * self.failure_threshold + self.timeout_ms) / 1000


class NodeSpec(BaseModel):
    """One kind of Ray node: its resources and labels, and how many identical nodes to start."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: _NonNegativeFloat = 1
    resources: dict[str, _NonNegativeFloat] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    region: str | None = None
    zone: str | None = None
    count: Annotated[int, Field(ge=1)] = 1

    @field_validator("region", "zone")
    @classmethod
    def _label_value(cls, value: str | None) -> str | None:
        if value is not None and not _LABEL_VALUE.match(value):
            raise ValueError("must be 1-63 characters of letters, digits, '-', '_' or '.', "
                             "starting and ending with a letter or digit")
        return value

    @field_validator("resources", "labels")
    @classmethod
    def _non_empty_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key.strip():
                raise ValueError(f"keys must be non-empty, got {key!r}")
        return value

    @model_validator(mode="after")
    def _no_label_conflict(self) -> NodeSpec:
        for key in ("region", "zone"):
            own = getattr(self, key)
            if own is not None and key in self.labels and self.labels[key] != own:
                raise field_error(("labels", key), self.labels[key],
                                  f"conflicts with {key}={own!r}; set it in one place")
        return self

    def all_labels(self) -> dict[str, str]:
        """``labels`` plus ``region`` and ``zone`` (as Ray node labels of those names)."""
        merged = dict(self.labels)
        if self.region is not None:
            merged["region"] = self.region
        if self.zone is not None:
            merged["zone"] = self.zone
        return merged


class TimeoutConfig(BaseModel):
    """Default deadlines, in seconds."""

    model_config = ConfigDict(extra="forbid")

    call_s: _PositiveSeconds = 30.0
    """Default timeout of a remote call (``ray.get``) in library code."""
    connect_s: _PositiveSeconds = 60.0
    """Connecting to / starting a cluster, and a node joining it."""
    placement_s: _PositiveSeconds = 30.0
    """An actor waiting for a node that satisfies its resources/labels (Ray never gives up)."""


class ClusterConfig(BaseModel):
    """A Ray cluster for herd.

    ``mode``:
      * ``embedded``: ``ray.init()`` starts a single-node cluster inside the driver (``head``).
      * ``local``: real ``ray start`` processes on 127.0.0.1: a head (``head``) and the worker
        nodes of ``nodes`` (each spec started ``count`` times).
      * ``address``: connect to an existing cluster at ``address``: ``auto``, ``host:port``,
        ``ray://host:port`` (Ray Client) or ``dns:NAME[:PORT]``. ``address`` is required in this
        mode and rejected in the others (so that a forgotten ``mode: address`` is not silently
        ignored). ``head``/``nodes`` only document the cluster there.

    ``regions``: when non-empty, every node's ``region`` must be one of them. When empty it is
    filled in from the regions the nodes name (head first, then workers, in order of first
    appearance), so ``cfg.regions`` is always the list of known regions.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["embedded", "local", "address"] = "embedded"
    address: str | None = None
    namespace: str = "herd"
    regions: list[str] = Field(default_factory=list)
    head: NodeSpec = Field(default_factory=NodeSpec)
    nodes: list[NodeSpec] = Field(default_factory=list)
    health_check: HealthCheckConfig = Field(default_factory=HealthCheckConfig)
    auth: Literal["token", "disabled"] = "token"
    timeouts: TimeoutConfig = Field(default_factory=TimeoutConfig)
    log_level: str = "INFO"

    @field_validator("address")
    @classmethod
    def _address_format(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value == "auto":
            return value
        match = _RAY_CLIENT.match(value) or _HOST_PORT.match(value) or _DNS.match(value)
        if match is None:
            raise ValueError("address must be 'auto', 'host:port', 'ray://host:port' or "
                             "'dns:NAME[:PORT]'")
        port = match.group("port")
        if port is not None and not 1 <= int(port) <= 65535:
            raise ValueError(f"port {port} is out of range 1-65535")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace_format(cls, value: str) -> str:
        if not _NAMESPACE.match(value):
            raise ValueError("namespace must be non-empty letters, digits, '_', '.' or '-'")
        return value

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for index, region in enumerate(value):
            if not _LABEL_VALUE.match(region):
                raise field_error((index,), region,
                                  "region names are 1-63 characters of letters, digits, '-', "
                                  "'_' or '.', starting and ending with a letter or digit")
            if region in seen:
                raise field_error((index,), region, f"duplicate region {region!r}")
            seen.add(region)
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        return level

    @model_validator(mode="after")
    def _cross_checks(self) -> ClusterConfig:
        if self.mode == "address" and self.address is None:
            raise field_error(("address",), None,
                              "address is required when mode is 'address' "
                              "('auto', 'host:port', 'ray://host:port' or 'dns:NAME[:PORT]')")
        if self.mode != "address" and self.address is not None:
            raise field_error(("address",), self.address,
                              f"address is only used with mode 'address' (mode is "
                              f"{self.mode!r}); set mode: address or remove address")
        if self.head.count != 1:
            raise field_error(("head", "count"), self.head.count, "a cluster has one head node")
        located = [(("head",), self.head)] + [(("nodes", i), n) for i, n in enumerate(self.nodes)]
        if self.regions:
            for loc, node in located:
                if node.region is not None and node.region not in self.regions:
                    where = format_loc(loc)
                    raise field_error(loc + ("region",), node.region,
                                      f"unknown region reference: {where} names region "
                                      f"{node.region!r}, not one of regions {self.regions}")
        else:
            collected: list[str] = []
            for _, node in located:
                if node.region is not None and node.region not in collected:
                    collected.append(node.region)
            self.regions = collected
        return self

    def worker_specs(self) -> list[NodeSpec]:
        """One ``NodeSpec`` (with ``count=1``) per worker node: ``nodes`` with ``count`` expanded."""
        return [spec.model_copy(update={"count": 1}, deep=True)
                for spec in self.nodes for _ in range(spec.count)]

    def node_count(self) -> int:
        """Total number of nodes: the head plus every worker."""
        return 1 + sum(spec.count for spec in self.nodes)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ClusterConfig:
        """Load a cluster config from a YAML file (raises ``ConfigError``)."""
        return load_yaml_model(cls, path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> ClusterConfig:
        """Validate a cluster config from a mapping (raises ``ConfigError``)."""
        return validate_model(cls, data, source=source)
