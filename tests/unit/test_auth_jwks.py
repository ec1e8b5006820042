"""The production path of `TokenVerifier`: RS256/ES256 keys from a JWKS URL.

A real HTTP server on 127.0.0.1 serves the JWKS, so `jwt.PyJWKClient` fetches,
parses and caches it exactly as it would against an identity provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID, uuid4

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from nova_platform.auth import AuthError, Principal, TokenVerifier
from nova_platform.settings import NovaSettings

AUDIENCE = "nova"
ISSUER = "https://issuer.test"
RSA_KID = "rsa-1"
EC_KID = "ec-1"


@dataclass(frozen=True)
class Keys:
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    other_rsa_key: rsa.RSAPrivateKey


@dataclass
class JwksServer:
    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec_key=ec.generate_private_key(ec.SECP256R1()),
        other_rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def _jwks(keys: Keys) -> bytes:
    rsa_jwk = RSAAlgorithm.to_jwk(keys.rsa_key.public_key(), as_dict=True)
    ec_jwk = ECAlgorithm.to_jwk(keys.ec_key.public_key(), as_dict=True)
    rsa_jwk.update(kid=RSA_KID, use="sig", alg="RS256")
    ec_jwk.update(kid=EC_KID, use="sig", alg="ES256")
    return json.dumps({"keys": [rsa_jwk, ec_jwk]}).encode()


@pytest.fixture
def jwks_server(keys: Keys) -> Iterator[JwksServer]:
    body = _jwks(keys)
    requests: list[str] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                requests.append(self.path)
            if self.path != "/.well-known/jwks.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        port = server.server_address[1]
        yield JwksServer(
            url=f"http://127.0.0.1:{port}/.well-known/jwks.json", requests=requests
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _verifier(url: str) -> TokenVerifier:
    return TokenVerifier(
        NovaSettings(
            jwt_secret=None, jwt_jwks_url=url, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
        )
    )


@pytest.fixture
def verifier(jwks_server: JwksServer) -> TokenVerifier:
    return _verifier(jwks_server.url)


def _claims(sub: UUID, **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": str(sub),
        "scope": "audio:read audio:write",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "exp": int(time.time()) + 300,
    }
    claims.update(overrides)
    return claims


def _rs256(key: rsa.RSAPrivateKey, claims: dict[str, Any], kid: str = RSA_KID) -> str:
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def _es256(
    key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], kid: str = EC_KID
) -> str:
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _hs256_by_hand(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    # PyJWT refuses to HMAC-sign with a PEM key, so an attacker would do it by hand.
    signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, claims)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def test_rs256_token_gives_the_principal(verifier: TokenVerifier, keys: Keys) -> None:
    user = uuid4()

    principal = verifier.verify(_rs256(keys.rsa_key, _claims(user)))

    assert principal == Principal(
        user_id=user, scopes=frozenset({"audio:read", "audio:write"})
    )


def test_es256_token_gives_the_principal(verifier: TokenVerifier, keys: Keys) -> None:
    user = uuid4()

    principal = verifier.verify(_es256(keys.ec_key, _claims(user, scope="admin")))

    assert principal.user_id == user
    assert principal.scopes == frozenset({"admin"})
    assert principal.is_admin


def test_jwks_is_fetched_once_and_cached(
    jwks_server: JwksServer, verifier: TokenVerifier, keys: Keys
) -> None:
    for _ in range(3):
        verifier.verify(_rs256(keys.rsa_key, _claims(uuid4())))
        verifier.verify(_es256(keys.ec_key, _claims(uuid4())))

    assert jwks_server.requests == ["/.well-known/jwks.json"]


def _public_pem(keys: Keys) -> bytes:
    return keys.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(
            lambda k: _rs256(k.other_rsa_key, _claims(uuid4())), id="other-rsa-same-kid"
        ),
        pytest.param(
            lambda k: _rs256(k.rsa_key, _claims(uuid4()), kid="unknown"),
            id="unknown-kid",
        ),
        pytest.param(
            lambda k: _rs256(k.rsa_key, _claims(uuid4(), aud="someone-else")),
            id="wrong-audience",
        ),
        pytest.param(
            lambda k: _es256(k.ec_key, _claims(uuid4(), iss="https://evil.test")),
            id="wrong-issuer",
        ),
        pytest.param(
            lambda k: _rs256(k.rsa_key, _claims(uuid4(), exp=int(time.time()) - 5)),
            id="expired",
        ),
        pytest.param(
            lambda k: _hs256_by_hand(_claims(uuid4()), _public_pem(k), RSA_KID),
            id="hs256-with-public-key",
        ),
        pytest.param(
            lambda k: (
                _unsigned({"alg": "none", "kid": RSA_KID}, _claims(uuid4())) + "."
            ),
            id="alg-none",
        ),
        pytest.param(
            lambda k: _rs256(k.rsa_key, _claims(uuid4()), kid=EC_KID),
            id="rs256-under-ec-kid",
        ),
        pytest.param(
            lambda k: _es256(k.ec_key, _claims(uuid4()), kid=RSA_KID),
            id="es256-under-rsa-kid",
        ),
        pytest.param(
            lambda k: jwt.encode(_claims(uuid4()), k.rsa_key, algorithm="RS256"),
            id="no-kid",
        ),
        pytest.param(lambda k: "not-a-jwt", id="garbage"),
    ],
)
def test_invalid_tokens_are_refused(
    verifier: TokenVerifier, keys: Keys, make_token: Callable[[Keys], str]
) -> None:
    token = make_token(keys)

    with pytest.raises(AuthError, match=r"\S"):
        verifier.verify(token)


def test_expired_token_says_so(verifier: TokenVerifier, keys: Keys) -> None:
    token = _es256(keys.ec_key, _claims(uuid4(), exp=int(time.time()) - 5))

    with pytest.raises(AuthError, match="expired"):
        verifier.verify(token)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_jwks_url_is_an_auth_error(keys: Keys) -> None:
    verifier = _verifier(f"http://127.0.0.1:{_closed_port()}/.well-known/jwks.json")

    with pytest.raises(AuthError, match="JWKS URL") as caught:
        verifier.verify(_rs256(keys.rsa_key, _claims(uuid4())))

    assert isinstance(caught.value.__cause__, jwt.PyJWKClientConnectionError)
