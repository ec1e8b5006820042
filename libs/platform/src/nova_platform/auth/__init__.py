"""Bearer JWT authentication shared by the command and query APIs."""

from .jwt import AuthError, Principal, Scope, TokenVerifier

__all__ = ["AuthError", "Principal", "Scope", "TokenVerifier"]
