"""Quorum arithmetic, quorum decisions and quorum reads/writes over Ray.

Quorum is always counted against a **static** list of members (nodes, actors, replicas) fixed by
the caller, never against the members that happen to answer: a majority of a list that shrinks
as members die or hang is no majority at all (Horde's quorum bug: two halves of a split each see
a "majority" of what they can reach). For the same reason a call that failed or did not answer
in time is a *missing* vote, never a vote (the original Elixir sketch counted failed remote calls
as votes).

* :func:`quorum_count` / :func:`has_quorum`: the arithmetic.
* :func:`make_decision`: run a function on every target node or actor with one deadline and
  return the majority value as a :class:`Decision`, or raise :class:`QuorumNotAchieved`.
* :class:`QuorumCall`: wait until ``required`` of a list of calls (ObjectRefs) succeed.
* :class:`ReplicaQuorum` with :func:`quorum_write` / :func:`quorum_read`: Dynamo-style
  ``R + W > N`` replication quorums built on ``QuorumCall``.

Nothing here cancels a call: a call still pending when the outcome is known keeps running and its
late result is dropped, so the functions run for votes and replica calls should be idempotent.
"""

from __future__ import annotations

from herd.platform.quorum.calls import QuorumCall, QuorumNotReached, QuorumResult, QuorumTimeout
from herd.platform.quorum.core import has_quorum, majority_value, quorum_count, tie_break_key
from herd.platform.quorum.decision import Decision, QuorumNotAchieved, Target, make_decision
from herd.platform.quorum.replica import QuorumRead, ReplicaQuorum, quorum_read, quorum_write

__all__ = ["Decision", "QuorumCall", "QuorumNotAchieved", "QuorumNotReached", "QuorumRead",
           "QuorumResult", "QuorumTimeout", "ReplicaQuorum", "Target", "has_quorum",
           "majority_value", "make_decision", "quorum_count", "quorum_read", "quorum_write",
           "tie_break_key"]
