"""Delta-state CRDTs (Almeida, Shoker, Baquero, "Delta State Replicated Data Types", 2016).

A CRDT state is a point of a join-semilattice: ``merge`` (join) is commutative, associative and
idempotent, so replicas that exchange states in any order, any number of times, converge. A
delta-state CRDT also has *delta mutators*: an operation yields a small state of the same type,
the delta, such that applying the operation equals joining the delta (``X.op() == X ⊔ δ``).
Shipping deltas instead of full states keeps replication traffic proportional to the change.

Style (one for every type): objects are mutable replicas, bound at construction to the id of
the replica they stand for: ``s = ORSet("us-east")``. A mutator such as ``s.add(x)`` mints under
that id, changes ``s`` and returns the delta, itself an instance of the same type.
``s.merge(other)`` joins ``other`` (a full state or a delta, it makes no difference) into ``s``
in place and returns ``s``. ``value()`` is what the application reads. States compare equal when
their lattice states are equal, whatever their ids; they are mutable, so unhashable, and not
thread-safe (guard a replica shared between threads with a lock).

Replica ids: a state without one (``ORSet()``, a delta, a copy, a loaded state) can be read,
merged and serialised; a mutation that needs an id (counters, ORSet, MVRegister, the maps, and
LWWRegister without an explicit timestamp) raises ``ConfigError``. GSet and TwoPSet mint nothing
and mutate without one. ``s.copy()`` is an independent state bound to no id, ``s.copy("b")``
one bound to ``"b"``: two writers must never share an id. LWWRegister and AWLWWMap stamp writes
with the replica's :class:`~herd.platform.clocks.HybridLogicalClock` (``s.clock``, made for the
id on first use, or given as ``clock=``); an explicit timestamp or clock may be passed instead.

Serialisation: ``to_dict()`` gives a JSON-safe dict tagged ``{"type": "ORSet", "v": 1, ...}``;
``to_bytes()`` is its compact UTF-8 JSON. ``Type.from_dict`` / ``Type.from_bytes`` and the
module-level :func:`load` / :func:`loads` (dispatching on the tag) read them back, raising
``ConfigError`` on a wrong tag, an unknown version or malformed content. The replica id is not
serialised (a state shipped to a peer must not make it a second writer under the sender's id):
a loaded state is bound to the ``replica=`` given to the loader, none by default, so a replica
restoring its own saved state passes its id: ``ORSet.from_bytes(raw, replica="us-east")``.
Pickling goes through ``to_bytes`` too, so pickles (e.g. Ray's) are versioned and validated and
unpickle bound to no id.

Types: :class:`GCounter`, :class:`PNCounter` (the delta of an increment is that replica's entry);
:class:`GSet`, :class:`TwoPSet`; and the causal types :class:`ORSet`, :class:`MVRegister`,
:class:`ORMap`, :class:`AWLWWMap`, built as in the paper from a *dot store* plus a
:class:`CausalContext`. A dot ``(replica, n)`` names the n-th event of a replica. The causal
context is the set of dots a state has seen, kept as a version vector plus a "dot cloud" of
dots beyond the contiguous prefix (compacted into the vector as gaps fill). A dot seen by the
context but absent from the store was removed, so the types need no tombstones. Stores:
DotSet (a set of dots), DotFun (dot -> value), DotMap (key -> dot store). ORSet is
DotMap[element, DotSet], MVRegister DotFun[value], AWLWWMap DotMap[key, DotFun[(HLC, value)]],
ORMap DotMap[key, store of the nested type], the nested values sharing the map's context.
:class:`LWWRegister` orders writes by :class:`~herd.platform.clocks.HLCTimestamp`.

Causal delta-merging condition (Almeida et al. §4): a delta-interval Δ(i, a..b) (the join of the
deltas replica i produced between its states a and b) should be joined into a state X(j) only
when X(j) already includes X(i, a), the origin's state where the interval starts. Under that
condition every state a replica passes through is causally consistent (nothing is visible before
its causes: e.g. an element added after observing another add is never seen without it). Merging
out of order is still *convergent* here, because every causal context records exact dots (the
cloud): joining any set of deltas and states in any order, with duplicates, gives the join of all
of them. A replication layer must therefore guarantee, per origin, FIFO delivery of delta-
intervals without gaps (re-sending the interval since the receiver's last acknowledgement), and
fall back to shipping the full state when it cannot (lost history, new or long-absent peer).
Merging a full state is always safe.

Replica ids are non-empty strings, each used by exactly one replica (one lineage of states):
two writers sharing an id would mint the same dots and counter entries.

Values held by registers and maps are JSON values, kept in canonical JSON text (sorted keys,
no whitespace), so they round-trip exactly and compare deterministically; ``value()`` decodes
fresh copies. Tuples become lists and non-string object keys become strings, as in JSON. Set
elements and map keys are strings or integers.

Layout: this module re-exports the public names of ``base`` (validation, the :class:`CRDT`
base class, :func:`load` / :func:`loads`), ``simple`` (counters, GSet, TwoPSet, LWWRegister),
``causal`` (CausalContext, dot stores), ``causal_base`` (the base classes of the causal types)
and ``causal_types`` (ORSet, MVRegister, AWLWWMap, ORMap).
"""

from __future__ import annotations

from herd.platform.crdt.base import CRDT, Dot, Key, load, loads
from herd.platform.crdt.causal import CausalContext
from herd.platform.crdt.causal_types import AWLWWMap, MVRegister, ORMap, ORSet
from herd.platform.crdt.simple import GCounter, GSet, LWWRegister, PNCounter, TwoPSet

__all__ = ["CRDT", "CausalContext", "GCounter", "PNCounter", "GSet", "TwoPSet", "ORSet",
           "LWWRegister", "MVRegister", "ORMap", "AWLWWMap", "Dot", "Key", "load", "loads"]
