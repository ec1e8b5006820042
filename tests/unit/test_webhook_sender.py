"""The HTTP sender against a real receiver on loopback (no Nova backends)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nova_integration.adapters.http_sender import HttpWebhookSender
from nova_integration.domain.payload import encode_body
from nova_integration.domain.retry import RetryPolicy, Verdict
from nova_platform.webhooks import Delivery, Subscription
from nova_platform.webhooks.targets import (
    TargetRefusedError,
    check_address,
    parse_target,
)

from ..webhook_receiver import WebhookReceiver

SECRET = "whsec_" + "k" * 32
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    found = WebhookReceiver()
    await found.start()
    yield found
    await found.stop()


@pytest.fixture
async def sender() -> AsyncIterator[HttpWebhookSender]:
    async with HttpWebhookSender.client(timeout_s=0.5) as client:
        yield HttpWebhookSender(client, allow_private=True, timeout_s=0.5)


def subscription(url: str) -> Subscription:
    return Subscription(
        subscription_id=uuid4(),
        user_id=uuid4(),
        url=url,
        event_types=frozenset({"*"}),
        secret=SECRET,
        created_at=time.time(),
    )


def delivery(sub: Subscription, sequence: int = 1) -> Delivery:
    event_id, audio_id = uuid4(), uuid4()
    payload = {
        "id": str(event_id),
        "type": "audio.created",
        "api_version": "2026-12-01",
        "created_at": "2026-12-03T20:28:42.123456Z",
        "audio_id": str(audio_id),
        "sequence": sequence,
        "data": {"language": "en-US"},
    }
    return Delivery(
        subscription_id=sub.subscription_id,
        audio_id=audio_id,
        sequence=sequence,
        event_id=event_id,
        event_type="audio.created",
        body=encode_body(payload),
        created_at=time.time(),
    )


async def test_a_delivery_arrives_signed_and_verifiable(
    receiver: WebhookReceiver, sender: HttpWebhookSender
) -> None:
    sub = subscription(receiver.endpoint("ok", SECRET))
    sent = delivery(sub)

    result = await sender.send(sub, sent)

    assert result.response_code == 204
    assert result.latency_ms > 0
    endpoint = receiver.endpoints["ok"]
    assert endpoint.bad_signatures == 0
    assert list(endpoint.accepted) == [str(sent.event_id)]


async def test_a_wrong_secret_is_refused_by_the_receiver(
    receiver: WebhookReceiver, sender: HttpWebhookSender
) -> None:
    url = receiver.endpoint("strict", "whsec_another_secret_entirely")
    result = await sender.send(subscription(url), delivery(subscription(url)))
    assert result.response_code == 401
    assert "signature does not match" in result.error
    assert receiver.endpoints["strict"].bad_signatures == 1


async def test_retry_after_is_read_from_the_answer(
    receiver: WebhookReceiver, sender: HttpWebhookSender
) -> None:
    url = receiver.endpoint(
        "busy", SECRET, fail_first=1, fail_status=429, retry_after="7"
    )
    result = await sender.send(subscription(url), delivery(subscription(url)))
    assert result.response_code == 429
    assert result.retry_after_s == 7.0


async def test_retry_after_as_an_http_date_is_honoured(
    receiver: WebhookReceiver, sender: HttpWebhookSender
) -> None:
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
    url = receiver.endpoint(
        "later",
        SECRET,
        fail_first=1,
        fail_status=503,
        retry_after=format_datetime(when, usegmt=True),  # RFC 9110 IMF-fixdate
    )
    result = await sender.send(subscription(url), delivery(subscription(url)))

    assert result.response_code == 503
    assert result.retry_after_s is not None
    assert 25.0 <= result.retry_after_s <= 30.0
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=600.0)
    decision = policy.decide(result, 1, random.Random(1))
    assert decision.verdict is Verdict.RETRY
    assert decision.delay_s == pytest.approx(result.retry_after_s)


@pytest.mark.parametrize(
    "header",
    [
        b"soon",
        b"1.5",
        b"-3",
        b"Wed, 21 Oct 2015 25:28:00 GMT",  # no such hour
        b"\xb2",  # latin-1 superscript two: a digit to str.isdigit, not a number
        b"",
    ],
)
async def test_a_malformed_retry_after_leaves_the_backoff_to_decide(
    header: bytes,
) -> None:
    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            503, headers=[(b"Retry-After", header)], stream=httpx.ByteStream(b"busy")
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(busy)) as client:
        mocked = HttpWebhookSender(client, allow_private=True, timeout_s=1.0)
        url = "http://127.0.0.1:9/hook"
        result = await mocked.send(subscription(url), delivery(subscription(url)))

    assert result.response_code == 503
    assert result.retry_after_s is None
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=600.0)
    delays = [policy.decide(result, 3, random.Random(n)).delay_s for n in range(20)]
    assert all(2.0 <= d <= 4.0 for d in delays)  # the third step: 4 s, jittered


async def test_a_retry_after_date_already_past_asks_for_no_wait(
    receiver: WebhookReceiver, sender: HttpWebhookSender
) -> None:
    url = receiver.endpoint(
        "past",
        SECRET,
        fail_first=1,
        fail_status=429,
        retry_after="Wed, 21 Oct 2015 07:28:00 GMT",
    )
    result = await sender.send(subscription(url), delivery(subscription(url)))
    assert result.response_code == 429
    assert result.retry_after_s == 0.0


async def test_a_receiver_that_never_answers_times_out(
    receiver: WebhookReceiver, sender: HttpWebhookSender
) -> None:
    url = receiver.endpoint("hangs", SECRET, hang=True)
    started = time.monotonic()
    result = await sender.send(subscription(url), delivery(subscription(url)))
    assert result.response_code is None
    assert "no answer within 0.5 s" in result.error
    assert time.monotonic() - started < 2.0


class CountingTransport(httpx.AsyncBaseTransport):
    """A real transport that counts the response bytes its caller pulled."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.bytes_read = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=CountedStream(response.stream, self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class CountedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, counter: CountingTransport):
        self._inner = inner
        self._counter = counter

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._counter.bytes_read += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


@contextlib.asynccontextmanager
async def serving(**routes: Handler) -> AsyncIterator[str]:
    """A loopback server with these POST routes; yields its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(f"/{path}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_redirects_are_not_followed(sender: HttpWebhookSender) -> None:
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    async with serving(redirect=redirect, elsewhere=redirect) as base:
        sub = subscription(base + "/redirect")
        moved = await sender.send(sub, delivery(sub))

    assert moved.response_code == 302
    assert hits == ["/redirect"]


async def test_a_large_answer_is_read_only_up_to_the_cap() -> None:
    offered = 1024 * 1024

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=500)
        response.content_length = offered
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the sender hangs up early
            for _ in range(offered // 1024):
                await response.write(b"x" * 1024)
        return response

    counting = CountingTransport()
    async with (
        httpx.AsyncClient(transport=counting, timeout=2.0) as client,
        serving(huge=huge) as base,
    ):
        capped = HttpWebhookSender(
            client, allow_private=True, timeout_s=2.0, max_response_bytes=4096
        )
        sub = subscription(base + "/huge")
        failed = await capped.send(sub, delivery(sub))

    assert failed.response_code == 500
    assert failed.error == "x" * 200  # the excerpt kept for the attempt
    # What the sender pulled off the connection: the cap and at most one more
    # network read (64 KiB), not the megabyte on offer.
    assert 4096 <= counting.bytes_read <= 4096 + 64 * 1024


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fe80::1]/hook",
    ],
)
async def test_private_targets_are_refused_without_the_development_setting(
    url: str,
) -> None:
    async with HttpWebhookSender.client() as client:
        strict = HttpWebhookSender(client, allow_private=False, timeout_s=1.0)
        result = await strict.send(subscription(url), delivery(subscription(url)))
    assert result.refused
    assert result.response_code is None
    assert "public addresses" in result.error or "not an address" in result.error


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("ftp://example.com/x", "only http:// and https://"),
        ("https://user:pw@example.com/x", "no credentials"),
        ("https:///x", "no host name"),
        ("https://example.com/x#frag", "fragment"),
        ("https://exa mple.com/", "spaces"),
        ("https://example.com:99999/", "not valid"),
    ],
)
def test_malformed_urls_say_what_to_fix(url: str, complaint: str) -> None:
    with pytest.raises(TargetRefusedError, match=complaint):
        parse_target(url)


def test_multicast_and_unspecified_are_never_allowed() -> None:
    for address in ("0.0.0.0", "224.0.0.1", "::"):
        with pytest.raises(TargetRefusedError):
            check_address(address, allow_private=True)
    check_address("93.184.215.14", allow_private=False)


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    # `localhost` resolves through the system resolver, like any name would.
    async with HttpWebhookSender.client() as client:
        strict = HttpWebhookSender(client, allow_private=False, timeout_s=1.0)
        url = "http://localhost.:9/hook"
        result = await strict.send(subscription(url), delivery(subscription(url)))
    assert result.refused
    await asyncio.sleep(0)


def certificate(tmp: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for DNS name `name` only (no IP address)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize(
    ("cert_name", "delivered"), [("localhost", True), ("elsewhere.example", False)]
)
async def test_https_goes_to_the_checked_address_and_verifies_the_name(
    tmp_path: Path, cert_name: str, delivered: bool
) -> None:
    cert_path, key_path = certificate(tmp_path, cert_name)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_path, key_path)
    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(request.headers["Host"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    trust = ssl.create_default_context(cafile=str(cert_path))
    try:
        async with HttpWebhookSender.client(verify=trust) as client:
            sender = HttpWebhookSender(client, allow_private=True, timeout_s=2.0)
            url = f"https://localhost:{port}/hook"
            result = await sender.send(subscription(url), delivery(subscription(url)))
    finally:
        await runner.cleanup()

    if delivered:
        assert result.response_code == 204, result.error
        assert seen == [f"localhost:{port}"]
    else:  # the certificate names another host: no request is made
        assert result.response_code is None
        assert (
            "CERTIFICATE_VERIFY_FAILED" in result.error or "certificate" in result.error
        )
        assert seen == []
