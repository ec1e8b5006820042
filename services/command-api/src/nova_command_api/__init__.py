"""Nova command side: REST commands, the event store and the outbox relay."""
