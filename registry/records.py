"""What the registry stores and streams: registrations and the events that change them.

All are frozen dataclasses (cheap to build, pickled by Ray as-is). ``meta`` is a JSON object
normalised by a JSON round trip when it was written; treat it as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

KeyMode = Literal["unique", "duplicate"]
OnHolderDeath = Literal["remove", "clear"]


@dataclass(frozen=True)
class Registration:
    """One record of a registry.

    ``epoch`` is the fencing token: it grows on every change of the record (and on every change
    of the registry shard, so a key that is unregistered and registered again gets a higher
    epoch, across registry restarts too). ``entry_id`` identifies the record (in a duplicate
    registry, one membership) for its whole life. ``handle`` is ``None`` when a record was
    created by ``compare_and_set`` without a holder, or when its holder died and the record was
    registered with ``on_holder_death="clear"``. ``node_id`` is the holder's node when it was
    registered (``None`` without a holder). ``registered_at`` is the creation time (Unix s).
    """

    key: str
    handle: Any
    meta: dict[str, Any]
    node_id: str | None
    epoch: int
    registered_at: float
    entry_id: int
    holder_id: str | None
    on_holder_death: OnHolderDeath = "remove"


@dataclass(frozen=True)
class MetaMatch:
    """What ``compare_and_set`` may expect instead of an epoch: the record exists and its meta
    has each of these values (top-level keys, compared as JSON values: ``1``, ``1.0`` and
    ``True`` differ). The write still bumps the epoch, so fencing is unchanged.

    For a writer whose condition is about the record's content, not its every change: a
    supervisor claiming a dead node's children expects "still owned by that node, incarnation
    n"; the registry clearing the dead holders meanwhile bumps the epochs without changing
    that, and a claim at the epoch read before would conflict and need a read and a second
    write (``EpochConflict`` then means the values differ, or the record is gone)."""

    values: dict[str, Any]

    def holds_for(self, meta: dict[str, Any]) -> bool:
        return all(key in meta and type(meta[key]) is type(value) and meta[key] == value
                   for key, value in self.values.items())


@dataclass(frozen=True)
class AbsentOr:
    """What ``compare_and_set`` may expect instead of an epoch: the record is absent, or has
    this epoch. For a writer that replaces a holder it knows to be gone, when the registry may
    or may not have dropped that holder's record yet: one write either way (a supervisor
    naming the replacement of a crashed child)."""

    epoch: int


Expected = int | MetaMatch | AbsentOr


@dataclass(frozen=True)
class Written:
    """What ``compare_and_set_many(..., full=False)`` answers for an item it wrote: the record's
    new epoch and its identity, not the whole record (the caller knows what it wrote; sending
    thousands of records back costs more than the write)."""

    key: str
    epoch: int
    entry_id: int


@dataclass(frozen=True)
class Registered:
    """A record was created (a unique key registered, or a member joined a duplicate key)."""

    seq: int
    shard: int
    registration: Registration

    @property
    def key(self) -> str:
        return self.registration.key


@dataclass(frozen=True)
class Unregistered:
    """A record was removed. ``registration`` is its last version; ``reason`` is
    ``"unregistered"``, ``"holder exited: <reason>"``, ``"holder died"`` or ``"resync"``."""

    seq: int
    shard: int
    registration: Registration
    reason: str

    @property
    def key(self) -> str:
        return self.registration.key


@dataclass(frozen=True)
class Updated:
    """A record changed (``compare_and_set``, ``update_meta``, or its holder died and the record
    is kept with ``on_holder_death="clear"``); ``previous`` is the version it replaced."""

    seq: int
    shard: int
    registration: Registration
    previous: Registration | None
    reason: str

    @property
    def key(self) -> str:
        return self.registration.key


Event = Registered | Unregistered | Updated


@dataclass(frozen=True)
class EventBatch:
    """Answer to a long poll. ``seq`` is the position to poll from next. ``reset`` means events
    after the poller's position are no longer available (the registry restarted or the poller
    fell behind its log): the poller must resynchronise from a snapshot."""

    seq: int
    events: tuple[Event, ...] = ()
    reset: bool = False


@dataclass(frozen=True)
class Snapshot:
    """Every record of one shard matching a prefix, as of event position ``seq``."""

    seq: int
    registrations: tuple[Registration, ...]


@dataclass(frozen=True)
class Rejection:
    """An expected refusal, returned (not raised) by the registry actor so that the client can
    raise the typed error with all its fields (exceptions lose them through Ray)."""

    kind: Literal["already_registered", "epoch_conflict", "not_registered", "holder_dead",
                  "meta_too_large",
                  "holder_not_ready"]
    key: str
    holder: Any = None
    expected: Expected | None = None
    actual: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Entry:
    """A registration as persisted, with the id of the client operation that last wrote it (a
    retried operation whose first attempt was committed is recognised and answered again)."""

    registration: Registration
    op: str = field(default="")


@dataclass(frozen=True)
class RegisterItem:
    """One entry of ``register_many`` as the registry actor plans it (checked by the client;
    ``node_id`` is the holder's node once placed, ``op`` the entry's operation id)."""

    key: str
    handle: Any
    holder_id: str
    node_id: str | None
    meta: dict[str, Any]
    on_holder_death: OnHolderDeath
    op: str


@dataclass(frozen=True)
class ClaimItem:
    """One item of ``compare_and_set_many``: ``changes`` as ``compare_and_set`` takes them."""

    key: str
    expected: Expected
    changes: dict[str, Any]
    holder_id: str | None
    node_id: str | None
    op: str


@dataclass(frozen=True)
class RemoveItem:
    """One item of ``remove_many``: the key, and the epoch it must still have (or None)."""

    key: str
    epoch: int | None = None
