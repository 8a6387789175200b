"""Pickling of registry state that holds actor handles, so that one handle Ray can no longer
restore does not make the whole shard unreadable.

Ray restores an actor handle by loading its class from the GCS function table of the job that
created the actor. When that job has ended and nothing keeps its table alive (its non-detached
actors are dead with it), the entry is gone and unpickling the handle fails inside Ray. Seen
after head restarts: a shard whose stored records named such a holder failed in ``__init__`` on
every restart, and the registry never answered again. Here each handle is pickled as a blob of
its own; a blob whose class is gone loads as :class:`LostHandle`, and the shard treats that
holder as dead (see ``RegistryActor``).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from typing import Any

from ray.actor import ActorHandle

from herd.platform.logging import get_logger

__all__ = ["LostHandle", "dumps", "loads"]

log = get_logger("herd.registry.persisted")

HANDLE_TAG = "herd-actor-handle"
#: What Ray raises when the creating job's function table no longer has the handle's class
#: (``ensure_str(None)`` on the missing entry). Anything else, such as the GCS being
#: unreachable, propagates: the shard must not forget a holder because of an outage.
CLASS_GONE_ERRORS = (AssertionError,)


@dataclass(frozen=True)
class LostHandle:
    """A stored handle that could not be restored: its actor's job and class are gone."""

    error: str


class _HandlePickler(pickle.Pickler):
    """Pickles each distinct handle once per dump: the same persistent id object for every
    occurrence, which pickle's memo then writes as a reference (10 000 records of one holder:
    5.5 MB -> ~1 MB, measured)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ids: dict[int, tuple[str, bytes]] = {}
        self._kept: list[ActorHandle] = []  # alive while dumping, so ids are not reused

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, ActorHandle):
            return None
        pid = self._ids.get(id(obj))
        if pid is None:
            pid = (HANDLE_TAG, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
            self._ids[id(obj)] = pid
            self._kept.append(obj)
        return pid


class _HandleUnpickler(pickle.Unpickler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: dict[bytes, Any] = {}

    def persistent_load(self, pid: Any) -> Any:
        tag, blob = pid
        if tag != HANDLE_TAG:
            raise pickle.UnpicklingError(f"unknown persistent id {tag!r}")
        if blob not in self._loaded:
            try:
                self._loaded[blob] = pickle.loads(blob)
            except CLASS_GONE_ERRORS as exc:
                log.warning("registry_handle_lost", error=repr(exc))
                self._loaded[blob] = LostHandle(repr(exc))
        return self._loaded[blob]


def dumps(value: Any) -> bytes:
    out = io.BytesIO()
    _HandlePickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return out.getvalue()


def loads(raw: bytes) -> Any:
    return _HandleUnpickler(io.BytesIO(raw)).load()
