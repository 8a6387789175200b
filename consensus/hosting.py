"""Where members run and how they are created: one detached actor per member, pinned to its
node (hard affinity: a member's log is on that node's disk), named
``herd/consensus/<group>/<member>``, never restarted by Ray (the group restarts or replaces it).
The group's record in the GCS KV store says which member is on which node."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray

from herd.consensus.raft import Membership
from herd.consensus.spec import GroupOptions, group_key, member_name
from herd.platform import kv
from herd.platform.control_plane import pinned_options

__all__ = ["GroupRecord", "create_member", "load_record", "save_record"]

NAMESPACE = "herd"


@dataclass
class GroupRecord:
    options: GroupOptions
    machine: Any
    placement: dict[str, str] = field(default_factory=dict)  # member id -> node id
    next_member: int = 1
    uid: str = ""  # this incarnation of the group: its logs' file names carry it

    def new_member_id(self) -> str:
        member_id = f"m{self.next_member}"
        self.next_member += 1
        return member_id


def create_member(actor_class: Any, record: GroupRecord, member_id: str, node_id: str,
                  membership: Membership) -> Any:
    """Start a member (``actor_class`` is ``herd.consensus.member.MemberActor``)."""
    options = record.options
    return actor_class.options(
        name=member_name(options.name, member_id), namespace=NAMESPACE, lifetime="detached",
        max_restarts=0, max_concurrency=1000, num_cpus=0, get_if_exists=True,
        **pinned_options(node_id),
    ).remote(record.options, record.machine, member_id, node_id, membership, record.uid)


def member_handle(group: str, member_id: str) -> Any:
    """The live member's handle (blocking: run it off the event loop); raises ``ValueError``
    when no such actor lives."""
    return ray.get_actor(member_name(group, member_id), namespace=NAMESPACE)


def save_record(record: GroupRecord) -> None:
    kv.put_object(group_key(record.options.name), record)


async def asave_record(record: GroupRecord) -> None:
    await kv.aput_object(group_key(record.options.name), record)


def load_record(name: str) -> GroupRecord | None:
    record: GroupRecord | None = kv.get_object(group_key(name))
    return record
