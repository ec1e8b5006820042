"""Settings every service shares, read from `NOVA_*` environment variables."""

from __future__ import annotations

import base64
import binascii
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nova_events import AUDIO_EVENTS_TOPIC

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class NovaSettings(BaseSettings):
    """Endpoints of the backends and the names of Nova's resources.

    `resource_suffix` is appended to every table, bucket, topic, index and
    consumer group name, so test runs and side-by-side stacks do not collide.
    """

    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="PLAINTEXT", description="SSL or SASL_SSL for MSK and Confluent"
    )
    kafka_sasl_mechanism: KafkaSaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = Field(
        default=None, description="CA bundle for the brokers; default: the system's"
    )
    aws_endpoint_url: str | None = Field(
        default=None, description="moto or LocalStack; unset for real AWS"
    )
    aws_region: str = "us-east-1"
    opensearch_url: str = "http://127.0.0.1:9200"
    redis_url: str = "redis://127.0.0.1:6379/0"
    resource_suffix: str = Field(default="", pattern=r"^[a-z0-9-]*$")
    log_level: str = "INFO"
    http_host: str = "0.0.0.0"

    jwt_secret: str | None = Field(
        default=None, description="HS256 secret (development); or set jwt_jwks_url"
    )
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None

    projection_pointer_ttl_s: float = Field(
        default=2.0,
        gt=0,
        description="how long readers cache which read-model table is active",
    )

    shutdown_grace_s: float = Field(
        default=20.0,
        gt=0,
        description="on SIGTERM, how long in-flight requests and batches may "
        "finish; keep it below the pod's termination grace period",
    )
    consumer_max_attempts: int = Field(
        default=10,
        ge=1,
        description="consumers: attempts in which one audio failed transiently "
        "while the backends worked, before its events are parked",
    )

    webhook_allow_private_targets: bool = Field(
        default=False,
        description="let webhooks reach loopback and private addresses (development)",
    )

    master_key: SecretStr | None = Field(
        default=None,
        description="development: base64 of 32 random bytes that wrap every "
        "user's data key; or set kms_key_id",
    )
    kms_key_id: str | None = Field(
        default=None,
        description="the KMS key (id, ARN or alias) that wraps every user's "
        "data key (production)",
    )
    key_cache_ttl_s: float = Field(
        default=30.0,
        gt=0,
        description="how long a process keeps a user's data key, or its "
        "erasure, before reading it again",
    )

    @model_validator(mode="after")
    def _kafka_sign_in_is_complete(self) -> Self:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        given = {
            "NOVA_KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "NOVA_KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "NOVA_KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
        }
        if sasl and (missing := [name for name, v in given.items() if v is None]):
            raise ValueError(
                f"NOVA_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                f"signs in with SASL: set {', '.join(missing)}"
            )
        if not sasl and (extra := [name for name, v in given.items() if v]):
            raise ValueError(
                f"{', '.join(extra)} need NOVA_KAFKA_SECURITY_PROTOCOL=SASL_SSL "
                "(or SASL_PLAINTEXT)"
            )
        if self.kafka_ssl_cafile and not self.kafka_security_protocol.endswith("SSL"):
            raise ValueError(
                "NOVA_KAFKA_SSL_CAFILE needs NOVA_KAFKA_SECURITY_PROTOCOL=SSL "
                "or SASL_SSL"
            )
        return self

    @model_validator(mode="after")
    def _one_key_wrapper(self) -> Self:
        if self.master_key is not None and self.kms_key_id:
            raise ValueError(
                "set either NOVA_MASTER_KEY (development) or NOVA_KMS_KEY_ID "
                "(production), not both: each wraps the users' data keys its "
                "own way"
            )
        return self

    def _named(self, base: str) -> str:
        return f"{base}-{self.resource_suffix}" if self.resource_suffix else base

    @property
    def event_store_table(self) -> str:
        return self._named("nova-event-store")

    @property
    def read_model_table(self) -> str:
        return self._named("nova-audio-read-model")

    @property
    def projections_table(self) -> str:
        """Which table or index each projection's readers use (see rebuilds)."""
        return self._named("nova-projections")

    @property
    def relay_lease_table(self) -> str:
        return self._named("nova-relay-lease")

    @property
    def relay_checkpoint_topic(self) -> str:
        return self._named("nova.relay.checkpoints.v1")

    @property
    def relay_transactional_id(self) -> str:
        return self._named("nova-relay")

    @property
    def idempotency_table(self) -> str:
        return self._named("nova-idempotency")

    @property
    def webhooks_table(self) -> str:
        """Webhook subscriptions and their deliveries."""
        return self._named("nova-webhooks")

    @property
    def user_keys_table(self) -> str:
        """Each user's data key, wrapped, or the tombstone of its erasure."""
        return self._named("nova-user-keys")

    @property
    def audio_bucket(self) -> str:
        return self._named("nova-audio")

    @property
    def events_topic(self) -> str:
        return self._named(AUDIO_EVENTS_TOPIC)

    @property
    def dead_letter_topic(self) -> str:
        return self._named("nova.audio.events.dlq.v1")

    @property
    def parking_table(self) -> str:
        return self._named("nova-parked-audio")

    @property
    def search_alias(self) -> str:
        return self._named("audio-transcriptions")

    def consumer_group(self, service: str) -> str:
        return self._named(f"nova-{service}")


def master_key_bytes(value: str) -> bytes:
    """The 32 bytes `NOVA_MASTER_KEY` holds in base64; raises `ValueError`."""
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ValueError(
            "NOVA_MASTER_KEY must be 32 random bytes in base64 (44 characters); "
            'make one with: python -c "import os, base64; '
            'print(base64.b64encode(os.urandom(32)).decode())"'
        )
    return key
