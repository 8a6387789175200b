"""herd.supervisors: OTP supervisors and the distributed dynamic supervisor on Ray.

``ChildSpec`` / ``SupervisorSpec`` describe children and supervisor flags; ``Supervisor.start``
runs a root supervisor (one Ray actor) with exact ``supervisor.erl`` semantics; a child ends
itself with ``exit(reason)``. ``DynamicSupervisor.start`` places children across the cluster's
nodes and re-places each exactly once when a node dies. See ``herd.supervisors.otp`` for the
OTP semantics, ``herd.supervisors.harness`` for what herd adds to a user's class and
``herd.supervisors.dynamic`` for the distributed supervisor.
"""

from __future__ import annotations

from herd.supervisors.dynamic import DynamicSupervisor
from herd.supervisors.dynamic_spec import DynamicChildInfo
from herd.supervisors.errors import (ChildAlreadyPresent, ChildAlreadyStarted, ChildRestarting,
                                     ChildRunning)
from herd.supervisors.exit import KILLED, NORMAL, SHUTDOWN, exit, is_normal
from herd.supervisors.handle import Supervisor
from herd.supervisors.harness import make_child_class
from herd.supervisors.info import ChildInfo, render_tree
from herd.supervisors.spec import ChildSpec, SupervisorSpec

__all__ = [
    "KILLED",
    "NORMAL",
    "SHUTDOWN",
    "ChildAlreadyPresent",
    "ChildAlreadyStarted",
    "ChildInfo",
    "ChildRestarting",
    "ChildRunning",
    "ChildSpec",
    "DynamicChildInfo",
    "DynamicSupervisor",
    "Supervisor",
    "SupervisorSpec",
    "exit",
    "is_normal",
    "make_child_class",
    "render_tree",
]
