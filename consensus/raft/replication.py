"""Log replication: the leader's appends (batched, pipelined per follower, snapshots for
followers behind the compacted log), the followers' answers with fast conflict backtracking,
and the commit rule that counts only replicas of entries of the leader's own term (Figure 8)."""

from __future__ import annotations

from herd.consensus.raft.core import RaftCore
from herd.consensus.raft.messages import Entry, Message, MessageType
from herd.consensus.raft.progress import quorum_index

__all__ = ["Replicator"]

SNAPSHOT_RETRY_TICKS_FACTOR = 2
SEQUENCES_KEPT = 1024


class Replicator(RaftCore):
    # -- leader ----------------------------------------------------------------------------
    def append_entries(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        if self.id in self.progress:
            self.progress[self.id].acknowledged(self.log.last_index())
        self.maybe_commit()

    def maybe_commit(self) -> bool:
        matches = [self.log.last_index() if member == self.id
                   else self.progress[member].match if member in self.progress else 0
                   for member in self.membership.voters]
        index = quorum_index(matches, self.membership.quorum())
        if index > self.log.commit and self.log.term_at(index) == self.term:
            self.log.commit = index
            self.on_commit_in_term()
            return True
        return False

    def on_commit_in_term(self) -> None:
        """Hook for reads that waited for the first commit of this term."""

    def broadcast_append(self) -> None:
        for peer in self.peers():
            self.send_append(peer)

    def send_append(self, peer: str, send_if_empty: bool = True) -> bool:
        progress = self.progress[peer]
        if progress.is_paused(self.config.max_inflight):
            return False
        prev = progress.next - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None or prev < self.log.snapshot_index:
            return self.send_snapshot(peer)
        entries = self.log.slice(progress.next, self.config.max_entries_per_message)
        if not entries and not send_if_empty:
            return False
        self.send(MessageType.APPEND, peer, index=prev, log_term=prev_term,
                  entries=tuple(entries), commit=self.log.commit)
        if entries:
            progress.sent(entries[-1].index)
        elif progress.state == "probe":
            progress.paused = True
        return bool(entries)

    def send_snapshot(self, peer: str) -> bool:
        snapshot = self.log.snapshot
        if snapshot is None:
            return False
        self.progress[peer].become_snapshot(snapshot.index)
        self.progress[peer].snapshot_sent_tick = self.ticks
        self.send(MessageType.SNAPSHOT, peer, snapshot=snapshot)
        return False

    def broadcast_heartbeat(self, sequence: int | None = None) -> None:
        if sequence is None:
            self.heartbeat_sequence += 1
            sequence = self.heartbeat_sequence
        self.sequence_ticks[sequence] = self.ticks
        if len(self.sequence_ticks) > SEQUENCES_KEPT:
            oldest = self.ticks - 2 * self.config.election_ticks
            self.sequence_ticks = {seq: tick for seq, tick in self.sequence_ticks.items()
                                   if tick >= oldest}
        for peer in self.peers():
            match = self.progress[peer].match
            self.send(MessageType.HEARTBEAT, peer, commit=min(match, self.log.commit),
                      context=sequence)

    def handle_append_response(self, message: Message) -> None:
        progress = self.progress.get(message.src)
        if progress is None:
            return
        progress.recent_active = True
        if message.reject:
            hint = message.hint_index
            if message.hint_term:
                last_of_term = self.log.last_index_of_term(message.hint_term)
                if last_of_term is not None:
                    hint = last_of_term + 1
            if progress.rejected(message.index, hint):
                self.send_append(message.src)
            return
        was_paused = progress.is_paused(self.config.max_inflight)
        if not progress.acknowledged(message.index):
            return
        if progress.state == "probe" or (progress.state == "snapshot"
                                         and progress.match >= progress.pending_snapshot):
            progress.become_replicate()
        if self.maybe_commit():
            # Followers learn the new commit index from the next append or heartbeat (a tick
            # at most): an empty append to each on every commit would double the messages,
            # and the rounds, of every command.
            for peer in self.peers():
                self.send_append(peer, send_if_empty=False)
        elif was_paused:
            self.send_append(message.src)
        while self.send_append(message.src, send_if_empty=False):
            pass
        if (message.src == self.lead_transferee
                and progress.match == self.log.last_index()):
            self.send(MessageType.TIMEOUT_NOW, message.src)

    def handle_heartbeat_response(self, message: Message) -> None:
        progress = self.progress.get(message.src)
        if progress is None:
            return
        progress.recent_active = True
        progress.acked_sequence = max(progress.acked_sequence, message.context)
        progress.paused = False
        if progress.state == "snapshot":
            waited = self.ticks - progress.snapshot_sent_tick
            if waited > SNAPSHOT_RETRY_TICKS_FACTOR * self.config.election_ticks:
                progress.become_probe()
        elif progress.state == "replicate" and progress.match < self.log.last_index():
            progress.inflight.clear()
        if progress.match < self.log.last_index():
            self.send_append(message.src)

    # -- follower --------------------------------------------------------------------------
    def handle_append(self, message: Message) -> None:
        log = self.log
        if message.index < log.commit:
            self.send(MessageType.APPEND_RESP, message.src, index=log.commit)
            return
        if log.matches(message.index, message.log_term):
            last = log.merge(message.index, message.entries)
            log.commit = max(log.commit, min(message.commit, last))
            self.send(MessageType.APPEND_RESP, message.src, index=last)
            return
        if message.index > log.last_index():
            hint_index, hint_term = log.last_index() + 1, 0
        else:
            hint_term = log.term_at(message.index) or 0
            hint_index = log.first_index_of_term(message.index)
        self.send(MessageType.APPEND_RESP, message.src, index=message.index, reject=True,
                  hint_index=hint_index, hint_term=hint_term)

    def handle_heartbeat(self, message: Message) -> None:
        self.log.commit = max(self.log.commit, min(message.commit, self.log.last_index()))
        self.send(MessageType.HEARTBEAT_RESP, message.src, context=message.context)

    def handle_snapshot(self, message: Message) -> None:
        snapshot = message.snapshot
        if snapshot is None:
            return
        if snapshot.index <= self.log.commit:
            self.send(MessageType.APPEND_RESP, message.src, index=self.log.commit)
            return
        if self.log.matches(snapshot.index, snapshot.term):
            self.log.commit = snapshot.index
        else:
            self.log.restore(snapshot)
            self.membership = snapshot.membership
        self.send(MessageType.APPEND_RESP, message.src, index=snapshot.index)
