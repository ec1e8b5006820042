"""Every Kafka client reaches the brokers the way the settings say: TLS, SASL."""

from __future__ import annotations

import ssl

import pytest
from faststream.security import SASLPlaintext, SASLScram512
from pydantic import ValidationError

from nova_platform.kafka import kafka_client_options, kafka_security, make_producer
from nova_platform.settings import NovaSettings

SCRAM = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "nova",
    "kafka_sasl_password": "s3cret",
}


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = NovaSettings(kafka_bootstrap_servers="broker:9092")
    assert kafka_security(settings) is None
    assert kafka_client_options(settings) == {"bootstrap_servers": "broker:9092"}


def test_tls_verifies_the_brokers_certificate_and_name() -> None:
    options = kafka_client_options(NovaSettings(kafka_security_protocol="SSL"))
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert "sasl_mechanism" not in options


def test_scram_over_tls_signs_in_with_the_configured_user() -> None:
    settings = NovaSettings(**SCRAM)  # type: ignore[arg-type]
    assert isinstance(kafka_security(settings), SASLScram512)
    options = kafka_client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "nova"
    assert options["sasl_plain_password"] == "s3cret"
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_sasl_without_tls_has_no_tls_context() -> None:
    settings = NovaSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="nova",
        kafka_sasl_password="s3cret",
    )
    assert isinstance(kafka_security(settings), SASLPlaintext)
    options = kafka_client_options(settings)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["ssl_context"] is None


def test_the_password_never_shows_in_the_settings() -> None:
    settings = NovaSettings(**SCRAM)  # type: ignore[arg-type]
    assert "s3cret" not in repr(settings)


async def test_producers_carry_the_security_options() -> None:
    producer = make_producer(NovaSettings(**SCRAM))  # type: ignore[arg-type]
    client = producer.client
    assert client._security_protocol == "SASL_SSL"
    assert client._sasl_mechanism == "SCRAM-SHA-512"
    assert client._sasl_plain_username == "nova"
    # Not started, so nothing to stop; closing the client quiets its warning.
    await client.close()


@pytest.mark.parametrize(
    ("values", "names"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL"},
            ["NOVA_KAFKA_SASL_MECHANISM", "NOVA_KAFKA_SASL_USERNAME"],
        ),
        (
            {**SCRAM, "kafka_sasl_password": None},
            ["NOVA_KAFKA_SASL_PASSWORD"],
        ),
        (
            {"kafka_sasl_username": "nova"},
            ["NOVA_KAFKA_SASL_USERNAME", "SASL_SSL"],
        ),
        (
            {"kafka_ssl_cafile": "/etc/ssl/ca.pem"},
            ["NOVA_KAFKA_SSL_CAFILE", "SSL"],
        ),
    ],
)
def test_an_incomplete_sign_in_is_refused_with_what_to_set(
    values: dict[str, object], names: list[str]
) -> None:
    with pytest.raises(ValidationError) as raised:
        NovaSettings(**values)  # type: ignore[arg-type]
    for name in names:
        assert name in str(raised.value)


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValidationError, match="SASL_SSL"):
        NovaSettings(kafka_security_protocol="TLS")


def test_the_consumers_broker_signs_in_too() -> None:
    from nova_platform.consumer import build_consumer_app

    async def ignore(records: object) -> None:
        return None

    app = build_consumer_app(
        NovaSettings(**SCRAM),  # type: ignore[arg-type]
        service="test",
        handle_batch=ignore,
    )
    [broker] = app.brokers
    options = broker._connection_kwargs
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "nova"
