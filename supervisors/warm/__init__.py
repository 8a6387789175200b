"""Warm standby workers: actor children started in processes that are already running.

* ``spec``: ``WarmPoolSpec`` (the ``warm=`` option of both supervisors) and child shapes;
* ``shell``: the standby actor that becomes a child (loads its class, runs its constructor);
* ``handle``: how ``via`` and ``WarmHandle`` reach the child through its shell;
* ``pool``: the ready shells of one node per shape, refilled in the background.

A supervisor with ``warm`` set starts an actor child in a ready shell of the child's shape when
there is one (crash restarts, failover, moves, ``start_child``), and cold otherwise.
"""

# Only the modules that import nothing of herd's supervisors: ``otp.spec`` imports ``spec``
# while it is being defined (import the pool from ``herd.supervisors.warm.pool``).
from herd.supervisors.warm.handle import WarmHandle, warm_route_meta
from herd.supervisors.warm.spec import Shape, WarmPoolSpec, shape_of

__all__ = ["Shape", "WarmHandle", "WarmPoolSpec", "shape_of", "warm_route_meta"]
