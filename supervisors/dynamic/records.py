"""Where a dynamic supervisor keeps its durable state.

* One registry record per child, under the child's id (so ``via(id)`` finds the current
  incarnation), registered with ``on_holder_death="clear"``: when the child's process dies the
  record stays, without holder, so survivors can find and claim it. Its meta says which
  supervisor owns it, the owner node, the incarnation and the restart counters; its epoch is the
  fencing token every claim compares-and-sets.
  The meta also carries the child's placement requirements (so members place orphans without
  reading its spec) and, for a record the driver has just created, ``start_by``: until then only
  the driver's ``start_owned`` call may start it.
* The child's spec (which may hold a class object, not JSON) and any handoff state live in the
  GCS KV store under ``dsup/<supervisor>/...``; so does the supervisor's configuration. A spec is
  written only after its record was created, so a taken id never overwrites a running child's.
"""

from __future__ import annotations

import time
from typing import Any

from ray import cloudpickle

from herd.platform import kv
from herd.registry import Registration
from herd.supervisors.dynamic.spec import DynamicChildInfo, DynamicSupervisorSpec
from herd.supervisors.otp.spec import ChildSpec
from herd.supervisors.strategies import Requirements

SUP_META = "herd_dsup"


def config_key(name: str) -> str:
    return f"dsup/{name}/config"


def save_config(spec: DynamicSupervisorSpec) -> None:
    kv.put_object(config_key(spec.name), spec.model_dump())


def load_config(name: str) -> DynamicSupervisorSpec | None:
    data = kv.get_object(config_key(name))
    return None if data is None else DynamicSupervisorSpec(**data)


def save_spec(name: str, spec: ChildSpec) -> None:
    kv.put(f"dsup/{name}/spec/{spec.id}", cloudpickle.dumps(spec))


def load_spec(name: str, child_id: str) -> ChildSpec | None:
    raw = kv.get(f"dsup/{name}/spec/{child_id}")
    return None if raw is None else cloudpickle.loads(raw)


def delete_spec(name: str, child_id: str) -> None:
    kv.delete(f"dsup/{name}/spec/{child_id}")
    kv.delete(f"dsup/{name}/handoff/{child_id}")


def save_handoff(name: str, child_id: str, state: Any) -> None:
    kv.put(f"dsup/{name}/handoff/{child_id}", cloudpickle.dumps(state))


def take_handoff(name: str, child_id: str) -> tuple[bool, Any]:
    """The state a moved child handed off, if any (kept until ``drop_handoff``)."""
    raw = kv.get(f"dsup/{name}/handoff/{child_id}")
    if raw is None:
        return False, None
    return True, cloudpickle.loads(raw)


def drop_handoff(name: str, child_id: str) -> None:
    kv.delete(f"dsup/{name}/handoff/{child_id}")


def record_gave_up(name: str, child_id: str, reason: str) -> None:
    kv.put_object(f"dsup/{name}/given_up/{child_id}", {"reason": reason, "at": time.time()})


def given_up(name: str) -> dict[str, dict[str, Any]]:
    prefix = f"dsup/{name}/given_up/"
    return {key[len(prefix):]: kv.get_object(key) for key in kv.keys(prefix)}


def mark_stopped(name: str, reason: str) -> None:
    kv.put_object(f"dsup/{name}/stopped", {"reason": reason, "at": time.time()})


def stopped_reason(name: str) -> str | None:
    data = kv.get_object(f"dsup/{name}/stopped")
    return None if data is None else data["reason"]


def load_state(name: str) -> tuple[DynamicSupervisorSpec | None, str | None]:
    """The configuration and the stop reason (None while running), read together."""
    return load_config(name), stopped_reason(name)


def forget(name: str) -> None:
    """Delete every KV key of the supervisor (after ``stop``)."""
    for key in kv.keys(f"dsup/{name}/"):
        kv.delete(key)


def child_meta(sup: str, owner: str, spec: ChildSpec, requirements: Requirements,
               start_by: float) -> dict[str, Any]:
    """The meta of a record the driver creates for a new child (incarnation 1, not started;
    only the driver's ``start_owned`` call may start it before ``start_by``)."""
    return {SUP_META: sup, "owner": owner, "incarnation": 1, "restart": spec.restart,
            "restarts": 0, "failovers": 0, "state": "starting", "region": None,
            "started_at": None, "start_by": start_by,
            "requires": {"labels": dict(requirements.labels),
                         "resources": dict(requirements.resources)}}


def requirements_in(meta: dict[str, Any]) -> Requirements:
    """The placement requirements a record's meta carries."""
    requires = meta.get("requires") or {}
    return Requirements(labels=requires.get("labels") or {},
                        resources=requires.get("resources") or {})


def info_from(reg: Registration, live_nodes: set[str] | None = None) -> DynamicChildInfo:
    meta = reg.meta
    status = meta["state"]
    if live_nodes is not None and meta["owner"] not in live_nodes:
        status = "orphaned"
    elif status == "running" and reg.handle is None:
        status = "restarting"
    return DynamicChildInfo(
        id=reg.key, node_id=meta["owner"], region=meta.get("region"), epoch=reg.epoch,
        incarnation=meta["incarnation"], restarts=meta["restarts"],
        failovers=meta["failovers"], status=status, handle=reg.handle,
        restart=meta["restart"], started_at=meta.get("started_at"))
