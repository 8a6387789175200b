"""A worker child's class: what a spec accepts, and how it travels to where the child starts.

``resolve_actor`` turns what a user passes as ``ChildSpec.actor`` (a class, a ``@ray.remote``
class or an import path ``"pkg.mod:Class"``) into the class.

A spec crosses processes (driver -> supervisor actor -> KV store) with its class as a
:class:`ShippedClass`: the class pickled once into bytes and loaded only where the child is
started. A class whose module the supervisor's process cannot import therefore fails that one
child's start with a ``StartChildError`` naming the class and the missing module, instead of
failing the deserialisation of the whole call (Ray's ``RaySystemError``, which names neither the
child nor the supervisor and leaves the caller a multi-line traceback).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import ray
from ray import cloudpickle
from ray.actor import ActorClass

from herd.supervisors.errors import StartChildError

__all__ = ["ShippedClass", "import_path", "resolve_actor"]


def resolve_actor(actor: Any) -> type | ActorClass:
    """A class, a ``@ray.remote`` class, an import path ``"pkg.mod:Class"`` or a
    :class:`ShippedClass` resolved to the class it names. Raises ``ValueError`` describing what
    is wrong (``StartChildError`` when a shipped class cannot be loaded in this process)."""
    if isinstance(actor, ShippedClass):
        return actor.load()
    if isinstance(actor, str):
        module_name, sep, attr_path = actor.partition(":")
        if not sep or not module_name or not attr_path:
            raise ValueError("an import path must look like 'package.module:Class'")
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"cannot import module {module_name!r}: {exc}") from None
        for part in attr_path.split("."):
            if not hasattr(target, part):
                raise ValueError(f"module {module_name!r} has no attribute {attr_path!r}")
            target = getattr(target, part)
        actor = target
    if isinstance(actor, ActorClass) or inspect.isclass(actor):
        return actor
    raise ValueError(f"must be a class, a @ray.remote class or an import path "
                     f"'pkg.mod:Class', not a {type(actor).__name__}")


def import_path(actor: type | ActorClass) -> str:
    """``"module:QualName"`` of a class or of the class under a ``@ray.remote`` one."""
    cls = (actor.__ray_metadata__.modified_class.__ray_actor_class__
           if isinstance(actor, ActorClass) else actor)
    return f"{cls.__module__}:{cls.__qualname__}"


class ShippedClass:
    """A child's class on its way between processes: pickled once, loaded on first use."""

    __slots__ = ("_loaded", "data", "name")

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        """Its import path, for messages (``"pkg.mod:Class"``)."""
        self.data = data
        self._loaded: type | ActorClass | None = None

    @classmethod
    def of(cls, actor: type | ActorClass) -> ShippedClass:
        shipped = cls(import_path(actor), cloudpickle.dumps(actor))
        shipped._loaded = actor
        return shipped

    def load(self) -> type | ActorClass:
        """The class; ``StartChildError`` naming it and the missing module if this process
        cannot import it."""
        if self._loaded is None:
            try:
                self._loaded = cloudpickle.loads(self.data)
            except Exception as exc:
                raise StartChildError(
                    f"its class {self.name} cannot be imported{_where()}: "
                    f"{type(exc).__name__}: {exc} (install its module on every node, or ship "
                    f"it with the job's runtime_env: py_modules or working_dir)") from exc
        return self._loaded

    def __reduce__(self) -> tuple[Any, ...]:
        return ShippedClass, (self.name, self.data)

    def __repr__(self) -> str:
        return f"<class {self.name}>"


def _where() -> str:
    if not ray.is_initialized():
        return ""
    return f" on node {ray.get_runtime_context().get_node_id()[:12]}"
