"""Static OTP supervision trees with ``supervisor.erl`` semantics.

* ``spec``: ``ChildSpec`` / ``SupervisorSpec`` (pydantic), validated at the boundary;
* ``core``: the pure supervisor state machine (strategies, restart types, intensity,
  significant children, shutdown order) behind a ``Runner``;
* ``server``: the supervisor actor, a thin shell that runs the core on Ray;
* ``supervisor``: the ``Supervisor`` front door a driver holds;
* ``lifecycle``: starting and stopping one child process; ``harness``: what herd adds to a
  user's class (monitor call, stop method, exit reason); ``exit``: exit reasons and ``exit()``;
  ``intensity``: the restart-intensity window; ``naming``: registry names of children;
  ``info``: what ``which_children`` reports.
"""

from herd.supervisors.otp.exit import KILLED, NORMAL, SHUTDOWN, exit, is_normal
from herd.supervisors.otp.info import ChildInfo, render_tree
from herd.supervisors.otp.spec import ChildSpec, SupervisorSpec
from herd.supervisors.otp.supervisor import Supervisor

__all__ = [
    "KILLED",
    "NORMAL",
    "SHUTDOWN",
    "ChildInfo",
    "ChildSpec",
    "Supervisor",
    "SupervisorSpec",
    "exit",
    "is_normal",
    "render_tree",
]
