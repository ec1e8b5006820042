"""Fixtures shared by every test tier.

Unit tests need nothing. Integration and e2e tests ask for `settings`, which
brings up the real backends once per session (see `tests/backends.py`) and
gives every run its own tables, bucket, topic and index through a unique
`resource_suffix`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from nova_platform.personal import DEV_MASTER_KEY
from nova_platform.resources import ensure_all
from nova_platform.settings import NovaSettings

from .backends import Backends, provide_backends

JWT_SECRET = "test-secret-" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    with provide_backends() as found:
        for key, value in found.env().items():
            os.environ.setdefault(key, value)
        yield found


@pytest.fixture(scope="session")
def run_id() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
async def settings(backends: Backends, run_id: str) -> NovaSettings:
    """Settings naming this run's own resources, which exist once this returns."""
    configured = NovaSettings(
        kafka_bootstrap_servers=backends.kafka_bootstrap_servers,
        aws_endpoint_url=backends.aws_endpoint_url,
        opensearch_url=backends.opensearch_url,
        redis_url=backends.redis_url,
        resource_suffix=run_id,
        jwt_secret=JWT_SECRET,
        master_key=backends.env().get("NOVA_MASTER_KEY", DEV_MASTER_KEY),
    )
    await ensure_all(configured)
    return configured
