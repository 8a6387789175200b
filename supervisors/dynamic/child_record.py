"""The registry record of one child of a dynamic supervisor, typed (pure, no Ray).

The record is registered under the child's name ``<supervisor>/<child id>`` (so
``via(f"{supervisor}/{child_id}")`` finds the current incarnation, and two supervisors on one
registry never collide). Its epoch is the fencing token every claim compares-and-sets; its meta,
written and read only through ``ChildRecord.to_meta`` / ``ChildRecord.from_registration``, says:

* ``herd_dsup``: the supervisor; ``child_id``: the child's id;
* ``owner``: the node whose member owns the child; ``incarnation``: starts of the child (1 for
  the first); ``state``: ``starting`` (claimed, not yet up), ``running`` or ``moving``
  (re-owned by a move or drain, not yet started by the new owner);
* ``restart``: the child's restart type; ``restarts`` / ``failovers``: counters;
* ``region`` / ``started_at``: where and when the current incarnation started;
* ``start_by``: for a record the driver has just created, until when only the driver's
  ``start_owned`` call may start it;
* ``requires``: the child's placement requirements (members place orphans without its spec);
* ``kind``: ``actor`` or ``lightweight``; a lightweight child's record also carries the route
  meta (``herd.supervisors.lightweight.route_meta``): its holder is the host of its member's
  node, and ``via(name)`` reaches the child through the host's ``call_child``;
* ``warm`` (with ``herd.supervisors.warm.warm_route_meta``): the current incarnation of an
  actor child runs in a warm shell, its holder, and ``via(name)`` reaches it through the shell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal, Protocol

from herd.supervisors.lightweight.handle import route_meta
from herd.supervisors.strategies import Requirements
from herd.supervisors.warm.handle import WARM_META, warm_route_meta

__all__ = ["SUP_META", "ChildKind", "ChildRecord", "ChildState", "RegistrationLike",
           "RestartType", "child_name"]

#: The meta key naming the supervisor that owns a record (``select`` filters on it).
SUP_META = "herd_dsup"

ChildState = Literal["starting", "running", "moving"]
RestartType = Literal["permanent", "transient", "temporary"]
ChildKind = Literal["actor", "lightweight"]


def child_name(supervisor: str, child_id: str) -> str:
    """The registry name of a child: ``<supervisor>/<child id>``."""
    return f"{supervisor}/{child_id}"


#: Requirements are values shared by many records (most children of a supervisor have the
#: same, usually none): one instance per distinct value, not one validated copy per record
#: read (rebuilding 10 000 records spent most of its time in ``Requirements.__post_init__``).
_NO_REQUIREMENTS = Requirements()


def _requirements(labels: Mapping[str, Any], resources: Mapping[str, Any]) -> Requirements:
    if not labels and not resources:
        return _NO_REQUIREMENTS
    try:
        # value types in the key: True == 1 must not fetch a copy validated for 1
        return _shared_requirements(tuple((k, type(v), v) for k, v in labels.items()),
                                    tuple((k, type(v), v) for k, v in resources.items()))
    except TypeError:  # an unhashable value: validated (and refused) by Requirements itself
        return Requirements(labels=labels, resources=resources)


@lru_cache(maxsize=1024)
def _shared_requirements(labels: tuple[tuple[str, type, Any], ...],
                         resources: tuple[tuple[str, type, Any], ...]) -> Requirements:
    return Requirements(labels={k: v for k, _, v in labels},
                        resources={k: v for k, _, v in resources})


class RegistrationLike(Protocol):
    """What a record is read from (``herd.registry.Registration`` has it)."""

    @property
    def key(self) -> str: ...
    @property
    def meta(self) -> Mapping[str, Any]: ...
    @property
    def epoch(self) -> int: ...
    @property
    def entry_id(self) -> int: ...
    @property
    def holder_id(self) -> str | None: ...
    @property
    def handle(self) -> Any: ...


@dataclass(frozen=True)
class ChildRecord:
    """One child's record: its meta fields, plus ``epoch``, ``entry_id`` (the record's identity
    for its whole life: a child removed and started again under the same id gets a new one) and
    ``has_holder`` as the registry last returned them (not meta: ``to_meta`` leaves them out)."""

    sup: str
    child_id: str
    owner: str
    restart: RestartType = "permanent"
    incarnation: int = 1
    state: ChildState = "starting"
    restarts: int = 0
    failovers: int = 0
    region: str | None = None
    started_at: float | None = None
    start_by: float | None = None
    requirements: Requirements = field(default_factory=Requirements)
    kind: ChildKind = "actor"
    warm: bool = False
    """The running incarnation is in a warm shell (calls are routed through it)."""
    epoch: int = 0
    entry_id: int = 0
    has_holder: bool = False
    #: The holder's actor handle as last read (not compared: a handle is not a value).
    holder: Any = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """The registry key of the record."""
        return child_name(self.sup, self.child_id)

    # --------------------------------------------------------------------------- meta
    @property
    def lightweight(self) -> bool:
        return self.kind == "lightweight"

    def to_meta(self) -> dict[str, Any]:
        route = (route_meta(self.name) if self.lightweight
                 else warm_route_meta() if self.warm else {})
        return {**route, "kind": self.kind, SUP_META: self.sup, "child_id": self.child_id,
                "owner": self.owner,
                "incarnation": self.incarnation, "state": self.state,
                "restart": self.restart, "restarts": self.restarts,
                "failovers": self.failovers, "region": self.region,
                "started_at": self.started_at, "start_by": self.start_by,
                "requires": {"labels": dict(self.requirements.labels),
                             "resources": dict(self.requirements.resources)}}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], *, epoch: int = 0, entry_id: int = 0,
                  has_holder: bool = False, holder: Any = None) -> ChildRecord:
        requires = meta.get("requires") or {}
        return cls(sup=meta[SUP_META], child_id=meta["child_id"], owner=meta["owner"],
                   restart=meta["restart"], incarnation=meta["incarnation"],
                   state=meta["state"], restarts=meta["restarts"],
                   failovers=meta["failovers"], region=meta.get("region"),
                   started_at=meta.get("started_at"), start_by=meta.get("start_by"),
                   requirements=_requirements(requires.get("labels") or {},
                                              requires.get("resources") or {}),
                   kind=meta.get("kind", "actor"), warm=bool(meta.get(WARM_META)),
                   epoch=epoch, entry_id=entry_id,
                   has_holder=has_holder, holder=holder)

    @classmethod
    def from_registration(cls, reg: RegistrationLike) -> ChildRecord:
        return cls.from_meta(reg.meta, epoch=reg.epoch, entry_id=reg.entry_id,
                             has_holder=reg.handle is not None or reg.holder_id is not None,
                             holder=reg.handle)  # a select without handles keeps holder_id

    @staticmethod
    def is_lightweight(reg: RegistrationLike) -> bool:
        return reg.meta.get("kind") == "lightweight"

    @staticmethod
    def is_record_of(reg: RegistrationLike, sup: str) -> bool:
        """Is ``reg`` a child record of supervisor ``sup``?"""
        return reg.meta.get(SUP_META) == sup and "child_id" in reg.meta

    # ------------------------------------------------------------------------ changes
    def names(self, owner: str, incarnation: int) -> bool:
        """Does the record still name ``owner`` and incarnation ``incarnation``?"""
        return self.owner == owner and self.incarnation == incarnation

    def claimed(self, owner: str, region: str | None, *, failover: bool,
                restarted: bool) -> ChildRecord:
        """The record once ``owner`` has claimed the next incarnation (not started yet)."""
        return replace(self, owner=owner, incarnation=self.incarnation + 1, state="starting",
                       start_by=None, region=region, failovers=self.failovers + int(failover),
                       restarts=self.restarts + int(restarted), warm=False)

    def claimed_running(self, owner: str, region: str | None, at: float, *, failover: bool,
                        restarted: bool) -> ChildRecord:
        """``claimed(...).started(region, at)`` in one step: the record of a claim that
        names the holder already (a lightweight child's host)."""
        return replace(self, owner=owner, incarnation=self.incarnation + 1, state="running",
                       start_by=None, region=region, started_at=at,
                       failovers=self.failovers + int(failover),
                       restarts=self.restarts + int(restarted))

    @staticmethod
    def claim_patch(owner: str, region: str | None, at: float, *, failover: bool,
                    restarted: bool) -> dict[str, Any]:
        """The registry changes that turn any record into its ``claimed_running`` record:
        the same for every record, so one patch serves a whole batch of claims."""
        steps = {"incarnation": 1, "failovers": int(failover), "restarts": int(restarted)}
        return {"meta_update": {"owner": owner, "state": "running", "start_by": None,
                                "region": region, "started_at": at},
                "meta_increment": {k: v for k, v in steps.items() if v}}

    def started(self, region: str | None, at: float, warm: bool = False) -> ChildRecord:
        """Its claimed incarnation runs (``warm``: in a warm shell)."""
        return replace(self, state="running", started_at=at, start_by=None, region=region,
                       warm=warm)

    def moving_to(self, target: str) -> ChildRecord:
        return replace(self, owner=target, state="moving", warm=False)
