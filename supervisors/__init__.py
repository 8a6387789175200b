"""herd.supervisors: OTP supervisors and the distributed dynamic supervisor on Ray.

``ChildSpec`` / ``SupervisorSpec`` describe children and supervisor flags; ``Supervisor.start``
runs a root supervisor (one Ray actor) with exact ``supervisor.erl`` semantics; a child ends
itself with ``exit(reason)``. ``DynamicSupervisor.start`` places children across the cluster's
nodes and re-places each exactly once when a node dies. See ``herd.supervisors.otp.core`` for the
OTP semantics, ``herd.supervisors.otp.harness`` for what herd adds to a user's class and
``herd.supervisors.dynamic.supervisor`` for the distributed supervisor.
"""

from __future__ import annotations

from herd.supervisors.dynamic.spec import DynamicChildInfo
from herd.supervisors.dynamic.supervisor import DynamicSupervisor
from herd.supervisors.errors import (
                                     ChildAlreadyPresent,
                                     ChildAlreadyStarted,
                                     ChildRestarting,
                                     ChildRunning,
)
from herd.supervisors.otp.exit import KILLED, NORMAL, SHUTDOWN, exit, is_normal
from herd.supervisors.otp.harness import make_child_class
from herd.supervisors.otp.info import ChildInfo, render_tree
from herd.supervisors.otp.spec import ChildSpec, SupervisorSpec
from herd.supervisors.otp.supervisor import Supervisor

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
