from __future__ import annotations

import time
from uuid import uuid4

import jwt
import pytest

from nova_platform.auth import AuthError, Scope, TokenVerifier
from nova_platform.auth.dev_token import issue
from nova_platform.settings import NovaSettings

SECRET = "unit-test-secret-of-at-least-32-bytes"


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(NovaSettings(jwt_secret=SECRET))


def test_valid_token_gives_user_and_scopes(verifier: TokenVerifier) -> None:
    user = uuid4()

    principal = verifier.verify(issue(user, "audio:read audio:write", SECRET))

    assert principal.user_id == user
    assert principal.has(Scope.AUDIO_WRITE)
    assert not principal.has(Scope.TRANSCRIBER)
    assert not principal.is_admin


def test_admin_holds_every_scope(verifier: TokenVerifier) -> None:
    principal = verifier.verify(issue(uuid4(), "admin", SECRET))

    assert principal.has(Scope.AUDIO_READ)
    assert principal.is_admin


def test_expired_token_says_so(verifier: TokenVerifier) -> None:
    claims = {"sub": str(uuid4()), "scope": "audio:read", "exp": int(time.time()) - 5}

    with pytest.raises(AuthError, match="expired"):
        verifier.verify(jwt.encode(claims, SECRET, algorithm="HS256"))


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        issue(uuid4(), "audio:read", "another-secret"),
        jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, SECRET, "HS256"),
        jwt.encode({"sub": str(uuid4())}, SECRET, algorithm="HS256"),
        jwt.encode({"sub": str(uuid4()), "exp": 2**40}, "k", algorithm="HS384"),
    ],
    ids=["garbage", "wrong-secret", "sub-not-uuid", "no-exp", "wrong-algorithm"],
)
def test_invalid_tokens_are_refused(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(AuthError):
        verifier.verify(token)


def test_a_verifier_needs_a_key_source() -> None:
    with pytest.raises(ValueError, match="NOVA_JWT_SECRET"):
        TokenVerifier(NovaSettings(jwt_secret=None, jwt_jwks_url=None))
