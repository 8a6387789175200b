"""Federation of separate Ray clusters: gateways that carry replication messages (being built)."""
