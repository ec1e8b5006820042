"""Prints a development bearer token signed with NOVA_JWT_SECRET.

python -m nova_platform.auth.dev_token --user <uuid> --scopes "audio:read audio:write"
"""

from __future__ import annotations

import argparse
import sys
import time
from uuid import UUID

import jwt

from ..settings import NovaSettings

# Used only when NOVA_JWT_SECRET is unset, i.e. on a developer machine.
DEV_SECRET = "nova-development-secret-not-for-production"  # noqa: S105


def issue(user_id: UUID, scopes: str, secret: str, ttl_s: int = 3600) -> str:
    """An HS256 token for `user_id` with `scopes`, valid for `ttl_s` seconds."""
    now = int(time.time())
    claims = {"sub": str(user_id), "scope": scopes, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", type=UUID, required=True, help="user id (UUID)")
    parser.add_argument("--scopes", default="audio:read audio:write")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until expiry")
    args = parser.parse_args(argv)
    secret = NovaSettings().jwt_secret or DEV_SECRET
    sys.stdout.write(issue(args.user, args.scopes, secret, args.ttl) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
