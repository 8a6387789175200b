"""A private network namespace for each pytest-xdist worker.

`make test` runs pytest inside one private namespace (``scripts/netns-run``); with two workers,
both would share it, and the tests that build network topologies in it (regions in namespaces,
isolated nodes on a bridge) would see each other's devices. Each worker therefore moves itself
into a namespace of its own, with loopback up, before any test runs. The calling thread, which
runs the tests and starts every ``ray start`` and ``ip`` process, is the one that moves, so all
of them land there.
"""

from __future__ import annotations

import ctypes
import os
import subprocess

CLONE_NEWNET = 0x40000000


def isolate_worker() -> bool:
    """Move this xdist worker into a fresh network namespace with loopback up; False when not a
    worker, or when the kernel refuses (then the worker keeps the shared namespace)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return False
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
    return True
