"""The distributed dynamic supervisor (Horde-like): children placed across nodes, each
re-placed exactly once when its node dies.

* ``supervisor``: the ``DynamicSupervisor`` front door (driver side); ``starting``: starting
  one child or many (``start_children``); ``handles``: its handles on the members;
* ``spec``: its options and what it reports about children;
* ``child_record``: a child's typed registry record (``<supervisor>/<id>``); ``records``: the
  records and the supervisor's state in the GCS KV store, blocking and asyncio faces;
* ``planner``: the pure reconcile planner (``plan(snapshot) -> [actions]``) and the decisions
  on a child's exit;
* ``member``: the member actor on each node, a thin shell that snapshots, plans and hands the
  actions to ``executor``, which carries them out (with ``executor_base``: the state its
  operations share, the host of its lightweight children among it; ``bulk``: lightweight
  children claimed, started and restarted in batches; ``tasks``: one operation per child at a
  time; ``running``: the children it runs; ``handoff``: state moved with a child);
  ``metrics``: its Ray metrics.

Placement (eligible nodes, the head rule, placing orphans, moves) is in
``herd.supervisors.strategies.placement``.
"""

from herd.supervisors.dynamic.spec import DynamicChildInfo, DynamicSupervisorOptions
from herd.supervisors.dynamic.supervisor import DynamicSupervisor

__all__ = ["DynamicChildInfo", "DynamicSupervisor", "DynamicSupervisorOptions"]
