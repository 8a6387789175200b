"""The distributed dynamic supervisor (Horde-like): children placed across nodes, each
re-placed exactly once when its node dies.

* ``supervisor``: the ``DynamicSupervisor`` front door;
* ``spec``: its options and what it reports about children;
* ``records``: a child's registry record and the supervisor's state in the GCS KV store;
* ``member``: the member actor on each node, which carries out what the reconcile planner
  decides; ``metrics``: its Ray metrics.
"""

from herd.supervisors.dynamic.spec import DynamicChildInfo, DynamicSupervisorOptions
from herd.supervisors.dynamic.supervisor import DynamicSupervisor

__all__ = ["DynamicChildInfo", "DynamicSupervisor", "DynamicSupervisorOptions"]
