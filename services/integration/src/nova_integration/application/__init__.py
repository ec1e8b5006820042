"""Fan-out of events into deliveries, and the dispatcher that sends them."""
