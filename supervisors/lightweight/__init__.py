"""Lightweight children: supervised objects and asyncio tasks inside a host actor.

``ChildSpec(..., kind="lightweight")`` makes a child that is not a Ray actor (a process) but an
instance of the user's class living in its supervisor's host actor, with the supervision
semantics of an actor child (strategies, intensity, restart types, shutdown, ``exit(reason)``,
registry names). Starting or restarting one costs no process start.

* ``runtime``: the children of one host (mailboxes, ``run`` loops, exits) in an event loop;
* ``host``: the host actor; ``watchdog``: its loop-lag watchdog; ``memory``: per-child estimate;
* ``link``: the supervisor's side of its host; ``handle``: calls routed to a child.

Where a lightweight child differs from an Erlang process (and from an actor child):

* ``brutal_kill`` and the end of a shutdown timeout are asyncio cancellation, which the child's
  code can catch; a child still running ``kill_grace_s`` after its cancellation is ended by
  restarting its host, which kills its siblings on that host too (their supervisor restarts
  them).
* children of one host share one event loop and one process: a child that blocks the loop
  stalls its siblings until the watchdog (``lag_threshold_s``) restarts the host; a child that
  leaks memory or crashes the interpreter takes its siblings with it.
"""

from herd.supervisors.lightweight.handle import ROUTE_METHOD, LightweightHandle, route_meta
from herd.supervisors.lightweight.host import LightweightHost, LightweightHostServer
from herd.supervisors.lightweight.link import HostLink

__all__ = ["ROUTE_METHOD", "HostLink", "LightweightHandle", "LightweightHost",
           "LightweightHostServer", "route_meta"]
