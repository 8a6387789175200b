"""The event store: one interface (``base.EventStore``), SQLite and PostgreSQL backends."""
