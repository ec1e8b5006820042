"""The integration service's connections to the outside world."""
