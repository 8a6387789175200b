"""``Group``: the client of a consensus group, and its start. Commands and queries go to the
leader (herd follows redirects and finds a new leader itself); a command carries this client's
id and a sequence number, so resending it after a lost answer applies it at most once; when
the deadline passes and it may have been appended, ``OutcomeUnknown`` says so."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from typing import Any, Literal

import ray
from ray.exceptions import RayActorError

from herd.consensus.errors import ConsensusError, GroupUnavailable, OutcomeUnknown
from herd.consensus.hosting import (
    GroupRecord,
    create_member,
    load_record,
    member_handle,
    save_record,
)
from herd.consensus.kv import KV
from herd.consensus.machine import Envelope, check_machine, parse_input
from herd.consensus.member import MemberActor
from herd.consensus.raft import Membership
from herd.consensus.spec import GroupOptions, group_key
from herd.platform import kv, rpc
from herd.platform.errors import ConfigError, HerdTimeoutError
from herd.platform.gcs import nodes
from herd.platform.validation import validate_model
from herd.supervisors.strategies.placement import eligible_nodes

__all__ = ["CommandFailed", "Group"]

Consistency = Literal["linearizable", "lease", "stale"]
ATTEMPT_TIMEOUT_S = 1.0
RETRY_PAUSE_S = 0.05
START_TIMEOUT_S = 60.0


class CommandFailed(ConsensusError):
    """The machine raised while applying the command (on every member alike)."""


class Group:
    def __init__(self, record: GroupRecord) -> None:
        self.record = record
        self.name = record.options.name
        self.client_id = uuid.uuid4().hex
        self.sequence = itertools.count(1)
        self.leader: str | None = None
        self.handles: dict[str, Any] = {}
        self.lock = threading.Lock()

    # -- start, connect, stop --------------------------------------------------------------
    @classmethod
    def start(cls, name: str, machine: Any = KV, replicas: int = 3, members: Any = "all",
              timeout: float = START_TIMEOUT_S, **options: Any) -> Group:
        """Start ``replicas`` members on distinct nodes (spread over regions) and wait for a
        leader. Bad input raises before anything is created."""
        check_machine(machine)
        spec = validate_model(GroupOptions, {"name": name, "replicas": replicas,
                                             "members": members, **options}, "Group.start")
        if load_record(name) is not None:
            raise ConfigError("a group of this name runs already", field="name", value=name)
        eligible = eligible_nodes(nodes(), spec.members)
        if len(eligible) < spec.replicas:
            raise ConfigError(f"needs {spec.replicas} distinct nodes, the cluster has "
                              f"{len(eligible)} eligible", field="replicas", value=replicas)
        by_region: dict[str, list[str]] = {}
        for node in eligible:
            by_region.setdefault(node.region or "", []).append(node.node_id)
        order = [n for column in itertools.zip_longest(*by_region.values()) for n in column
                 if n is not None]
        placement = {f"m{i + 1}": order[i] for i in range(spec.replicas)}
        record = GroupRecord(spec, machine, placement, spec.replicas + 1, uuid.uuid4().hex[:12])
        membership = Membership(frozenset(placement))
        handles = [create_member(MemberActor, record, member_id, node_id, membership)
                   for member_id, node_id in placement.items()]
        try:
            rpc.get([h.start.remote() for h in handles], timeout=timeout,
                    what=f"start of group {name}")
            save_record(record)
        except BaseException:
            for handle in handles:
                _kill(handle)
            raise
        group = cls(record)
        group.wait_for_leader(timeout)
        return group

    @classmethod
    def connect(cls, name: str) -> Group:
        record = load_record(name)
        if record is None:
            raise ConfigError("no group of this name", field="name", value=name)
        return cls(record)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every member and delete its log (a member that does not answer is killed)."""
        self.refresh()
        for member_id in list(self.record.placement):
            handle = self.handle(member_id)
            if handle is None:
                continue
            with contextlib.suppress(RayActorError, HerdTimeoutError):
                rpc.get(handle.destroy.remote(), timeout=timeout, what=f"stop of {member_id}")
            _kill(handle)
        kv.delete(group_key(self.name))

    # -- calls -----------------------------------------------------------------------------
    def command(self, command: Any, timeout: float = 5.0) -> Any:
        parsed = parse_input(self.record.machine.command_model, command, "command")
        envelope = Envelope(self.client_id, next(self.sequence), parsed, 0.0)
        maybe_appended = False
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            status, value = self.call(lambda h, t: h.command.remote(envelope, t), remaining)
            if status == "ok":
                return value
            if status == "error":
                raise CommandFailed(f"{self.name}: {value}")
            maybe_appended |= status in ("unknown", "lost")
        if maybe_appended:
            raise OutcomeUnknown(f"{self.name}: command {envelope.sequence} of client "
                                 f"{self.client_id} may or may not have been applied",
                                 client=self.client_id, sequence=envelope.sequence)
        raise GroupUnavailable(f"{self.name}: no leader answered within {timeout} s")

    def query(self, query: Any, consistency: Consistency = "linearizable",
              timeout: float = 5.0) -> Any:
        if consistency not in ("linearizable", "lease", "stale"):
            raise ConfigError("must be linearizable, lease or stale", field="consistency",
                              value=consistency)
        parsed = parse_input(self.record.machine.query_model, query, "query")
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            status, value = self.call(lambda h, t: h.query.remote(parsed, consistency, t),
                                      remaining, any_member=consistency == "stale")
            if status == "ok":
                return value
        raise GroupUnavailable(f"{self.name}: no leader answered the query within {timeout} s")

    def call(self, send: Any, remaining: float, any_member: bool = False) -> tuple[str, Any]:
        """One attempt at the member most likely to lead; follows a redirect next time."""
        target = self.leader or self.next_member(None)
        if any_member and target is None:
            target = self.next_member(None)
        handle = self.handle(target) if target else None
        if handle is None:
            self.leader = self.next_member(target)
            time.sleep(RETRY_PAUSE_S)
            return "lost", None
        attempt = min(remaining, ATTEMPT_TIMEOUT_S)
        try:
            status, value = rpc.get(send(handle, attempt), timeout=attempt + 0.5,
                                    what=f"{self.name}/{target}")
        except (RayActorError, HerdTimeoutError) as exc:
            self.handles.pop(target or "", None)
            self.leader = self.next_member(target)
            return ("lost" if isinstance(exc, HerdTimeoutError) else "unknown"), None
        if status == "redirect":
            self.leader = value if value and value != target else self.next_member(target)
            if not value:
                time.sleep(RETRY_PAUSE_S)
        elif status in ("unknown", "timeout"):
            self.leader = None
        else:
            self.leader = target
        return status, value

    def next_member(self, after: str | None) -> str | None:
        members = sorted(self.record.placement)
        if after not in members:
            self.refresh()
            members = sorted(self.record.placement)
            return members[0] if members else None
        return members[(members.index(after) + 1) % len(members)]

    def refresh(self) -> None:
        record = load_record(self.name)
        if record is not None:
            self.record = record

    def handle(self, member_id: str) -> Any:
        if member_id not in self.handles:
            try:
                self.handles[member_id] = member_handle(self.name, member_id)
            except ValueError:
                return None
        return self.handles[member_id]

    # -- inspection ------------------------------------------------------------------------
    def status(self, timeout: float = 2.0) -> list[dict[str, Any]]:
        self.refresh()
        found = []
        for member_id, node_id in sorted(self.record.placement.items()):
            handle = self.handle(member_id)
            try:
                if handle is None:
                    raise ValueError("no such actor")
                found.append(rpc.get(handle.status.remote(), timeout=timeout))
            except Exception as exc:
                self.handles.pop(member_id, None)
                found.append({"member": member_id, "node_id": node_id, "role": "unreachable",
                              "error": type(exc).__name__})
        return found

    def leader_status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        leaders = [s for s in self.status(timeout) if s["role"] == "leader"]
        return max(leaders, key=lambda s: s["term"], default=None)

    def wait_for_leader(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader_status()
            if leader is not None and leader["commit"] >= 1:
                self.leader = leader["member"]
                return str(leader["member"])
            time.sleep(0.1)
        raise GroupUnavailable(f"{self.name}: no leader within {timeout} s")


def _kill(handle: Any) -> None:
    with contextlib.suppress(RayActorError, ValueError):
        ray.kill(handle, no_restart=True)
