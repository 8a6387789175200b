"""The leader's round of keeping the group whole (carried out; decided by ``planner.plan``):
who is alive (a peer heard from recently, or an actor of its name that Ray still lists) and on
which live node, then restarts, a dead voter's removal, a fresh learner on a free node, or a
caught-up learner's promotion. Runs as its own task, never inside the member's loop (a
membership change waits for that loop to commit it)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from herd.consensus.hosting import GroupRecord, asave_record, load_record, member_handle
from herd.consensus.peers import Peers
from herd.consensus.planner import Action, MemberView, plan
from herd.consensus.raft import ConfChange, Membership, RaftNode
from herd.consensus.spec import GroupOptions
from herd.platform import rpc
from herd.platform.gcs import anodes
from herd.platform.logging import get_logger
from herd.supervisors.strategies.placement import eligible_nodes

__all__ = ["Reconciler"]

log = get_logger("herd.consensus")

HEARD_RECENTLY_S = 2.0
CHANGE_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0


class Member(Protocol):
    """What the reconciler uses of its member (``herd.consensus.member.RaftMember``)."""

    id: str
    options: GroupOptions
    node: RaftNode
    peers: Peers

    async def change(self, change: ConfChange, timeout: float) -> tuple[str, Any]: ...

    def spawn(self, record: GroupRecord, member_id: str, node_id: str,
              membership: Membership) -> Any: ...


class Reconciler:
    def __init__(self, member: Member) -> None:
        self.member = member
        self.task: asyncio.Task[None] | None = None

    def start_round(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.round())

    async def round(self) -> None:
        member, node = self.member, self.member.node
        if node.role != "leader" or not node.committed_in_term():
            return
        try:
            record = await rpc.blocking(load_record, member.options.name)
            if record is None:
                return
            nodes = await anodes()
            alive = {n.node_id for n in nodes if n.alive}
            views = [await self.view(record, member_id, alive)
                     for member_id in sorted(node.membership.members)]
            used = {record.placement.get(v.id) for v in views}
            free = [n.node_id for n in eligible_nodes(nodes, member.options.members)
                    if n.node_id not in used]
            regions = {n.node_id: n.region or "" for n in nodes}
            actions = plan(views, member.id, node.log.commit, member.options.replicas, free,
                           f"m{record.next_member}", member.options.catch_up_lag, regions)
            for action in actions:
                await self.execute(action, record)
        except Exception as exc:
            log.warning("reconcile_failed", group=member.options.name, error=repr(exc))

    async def view(self, record: GroupRecord, member_id: str, alive: set[str]) -> MemberView:
        member, node = self.member, self.member.node
        node_id = record.placement.get(member_id, "")
        silent_s = member.peers.silent_for(member_id)
        process_alive = member_id == member.id or silent_s < HEARD_RECENTLY_S
        if not process_alive:
            try:
                await rpc.blocking(member_handle, member.options.name, member_id)
                process_alive = True
            except ValueError:
                process_alive = False
        progress = node.progress.get(member_id)
        return MemberView(member_id, node_id, member_id in node.membership.voters,
                          node_id in alive, process_alive, progress.match if progress else 0)

    async def execute(self, action: Action, record: GroupRecord) -> None:
        member = self.member
        log.info("reconcile", group=member.options.name, action=action.kind,
                 member=action.member, node_id=action.node_id)
        if action.kind == "restart":
            await self.spawn(record, action.member, action.node_id, member.node.membership)
        elif action.kind == "remove":
            status, _ = await member.change(ConfChange("remove", action.member), CHANGE_TIMEOUT_S)
            if status == "ok":
                record.placement.pop(action.member, None)
                await asave_record(record)
        elif action.kind == "promote":
            await member.change(ConfChange("promote", action.member), CHANGE_TIMEOUT_S)
        else:
            new_id = record.new_member_id()
            record.placement[new_id] = action.node_id
            await asave_record(record)
            current = member.node.membership
            joining = Membership(current.voters, current.learners | {new_id})
            await self.spawn(record, new_id, action.node_id, joining)
            await member.change(ConfChange("add_learner", new_id), CHANGE_TIMEOUT_S)

    async def spawn(self, record: GroupRecord, member_id: str, node_id: str,
                    membership: Membership) -> Any:
        handle = self.member.spawn(record, member_id, node_id, membership)
        await rpc.aget(handle.start.remote(), timeout=START_TIMEOUT_S,
                       what=f"start of member {member_id}")
        self.member.peers.forget(member_id)
        return handle
