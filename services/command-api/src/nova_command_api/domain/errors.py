"""Errors the domain raises; the API maps each to a problem type."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every rule the `AudioFile` aggregate enforces."""


class InvalidStateError(DomainError):
    """Raised when a command is not allowed in the aggregate's current status."""

    def __init__(self, command: str, status: str, allowed: tuple[str, ...]) -> None:
        self.command = command
        self.status = status
        super().__init__(
            f"cannot {command} an audio file that is {status}; "
            f"allowed when {' or '.join(allowed)}"
        )
