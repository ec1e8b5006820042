"""Webhook delivery's pure rules: the public payload, its signature, retries.

Nothing here does I/O; clocks and random sources are passed in, so every rule
is tested without a network.
"""
