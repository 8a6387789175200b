"""Randomized fault injection (a nemesis) against a real local cluster, a recorded history of
client operations, and a checker of herd's guarantees over that history."""
