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

#: What Ray raises when the creating job's function table no longer has the handle's class
#: (``ensure_str(None)`` on the missing entry). Anything else, such as the GCS being
#: unreachable, propagates: the shard must not forget a holder because of an outage.
CLASS_GONE_ERRORS = (AssertionError,)


@dataclass(frozen=True)
class LostHandle:
    """A stored handle that could not be restored: its actor's job and class are gone."""

    error: str


def _restore_handle(blob: bytes) -> Any:
    """The handle pickled in ``blob``, or a :class:`LostHandle` if its class is gone."""
    try:
        return pickle.loads(blob)
    except CLASS_GONE_ERRORS as exc:
        log.warning("registry_handle_lost", error=repr(exc))
        return LostHandle(repr(exc))


def reduce_handle(handle: Any) -> tuple[Any, tuple[bytes]]:
    """How ``dumps`` writes an actor handle: a blob of its own, restored by ``_restore_handle``."""
    return _restore_handle, (pickle.dumps(handle, protocol=pickle.HIGHEST_PROTOCOL),)


def dumps(value: Any) -> bytes:
    """``value`` pickled, each actor handle as a blob of its own. A per-type reducer, not a
    ``persistent_id`` hook: the C pickler calls it for handles only (a Python hook would run
    for every object: 0.18 s for a 10 000-record segment), and memoises each handle, so one
    held by thousands of records is written once."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {ActorHandle: reduce_handle}
    pickler.dump(value)
    return out.getvalue()


def loads(raw: bytes) -> Any:
    return pickle.loads(raw)
