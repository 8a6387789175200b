"""Errors of a chaos run (part of herd's one ``HerdError`` tree)."""

from __future__ import annotations

from herd.platform.errors import HerdError

__all__ = ["ChaosError", "HeadLost", "NoTarget"]


class ChaosError(HerdError):
    """A chaos run could not be set up or carried out (not a violation of a guarantee)."""


class NoTarget(ChaosError):
    """A fault found nothing to aim at (e.g. no worker node to spare): it is skipped."""


class HeadLost(ChaosError):
    """The head did not come back after a restart: the cluster is gone (and Ray ends a driver
    that cannot reach its GCS for a minute), so the run stops and reports at once."""
