"""Example event-sourced apps (importable by every node, so `herd run` can start them)."""
