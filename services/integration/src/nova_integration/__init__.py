"""Tells external systems about Nova events."""
