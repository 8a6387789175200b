"""Errors of a chaos run (part of herd's one ``HerdError`` tree)."""

from __future__ import annotations

from herd.platform.errors import HerdError

__all__ = ["ChaosError", "NoTarget"]


class ChaosError(HerdError):
    """A chaos run could not be set up or carried out (not a violation of a guarantee)."""


class NoTarget(ChaosError):
    """A fault found nothing to aim at (e.g. no worker node to spare): it is skipped."""
