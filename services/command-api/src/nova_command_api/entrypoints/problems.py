"""How the command side's errors answer: one problem type per error."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nova_platform.http.problems import Problem
from nova_platform.personal import UserErasedError
from nova_platform.webhooks import InvalidCursorError, SubscriptionNotFoundError

from ..application.erasure import ErasureForbiddenError
from ..application.errors import (
    AudioAlreadyRegisteredError,
    AudioNotFoundError,
    StaleAttemptError,
    VersionMismatchError,
)
from ..application.ports import (
    ConcurrencyError,
    EventStoreUnavailableError,
    EventTooLargeError,
)
from ..application.storage import (
    AudioObjectMissingError,
    AudioStorageError,
    NotAudioError,
)
from ..application.webhooks import (
    DeliveryNotFoundError,
    DeliveryNotParkedError,
    EarlierDeliveryParkedError,
    InvalidSubscriptionError,
    SubscriptionLimitError,
    WebhookAccessError,
)
from ..domain.errors import InvalidStateError

logger = logging.getLogger(__name__)


def _not_found(exc: AudioNotFoundError) -> Problem:
    return Problem(
        str(exc),
        status=404,
        kind="not-found",
        title="Audio not found",
        audio_id=str(exc.audio_id),
    )


def _registered(exc: AudioAlreadyRegisteredError) -> Problem:
    return Problem(
        str(exc),
        status=409,
        kind="already-registered",
        title="Object registered already",
        audio_id=str(exc.audio_id),
        s3_key=exc.s3_key,
    )


def _version(exc: VersionMismatchError) -> Problem:
    return Problem(
        str(exc),
        status=412,
        kind="version-mismatch",
        title="Version mismatch",
        expected_version=exc.expected,
        current_version=exc.actual,
    )


def _concurrent(exc: ConcurrencyError) -> Problem:
    return Problem(
        str(exc),
        status=409,
        kind="concurrent-write",
        title="Written concurrently",
        expected_version=exc.expected_version,
        current_version=exc.actual_version,
    )


def _state(exc: InvalidStateError) -> Problem:
    return Problem(
        str(exc),
        status=409,
        kind="invalid-state",
        title="Not allowed in this state",
        status_now=exc.status,
        command=exc.command,
    )


def _stale(exc: StaleAttemptError) -> Problem:
    return Problem(
        str(exc),
        status=409,
        kind="stale-attempt",
        title="Result of an old attempt",
        attempt=exc.attempt,
        current_attempt=exc.current,
    )


def _too_large(exc: EventTooLargeError) -> Problem:
    return Problem(
        str(exc),
        status=413,
        kind="event-too-large",
        title="Too large for one event",
        size_bytes=exc.size,
    )


def _user_erased(exc: UserErasedError) -> Problem:
    extra = {"erased_at": exc.erased_at.isoformat()} if exc.erased_at else {}
    return Problem(
        f"{exc}: their audio and personal data are gone; there is nothing to act on",
        status=410,
        kind="user-erased",
        title="User erased",
        user_id=str(exc.user_id),
        **extra,
    )


def _erasure_forbidden(exc: ErasureForbiddenError) -> Problem:
    return Problem(str(exc), status=403, kind="forbidden", title="Not allowed")


def _not_audio(exc: NotAudioError) -> Problem:
    return Problem(str(exc), status=415, kind="not-audio", title="Not audio")


def _missing(exc: AudioObjectMissingError) -> Problem:
    return Problem(str(exc), status=422, kind="object-missing", title="No such object")


def _storage(exc: AudioStorageError) -> Problem:
    logger.error("audio storage failed", extra={"error": str(exc)})
    return Problem(
        "audio storage is not reachable right now; retry in a moment",
        status=503,
        kind="storage-unavailable",
        title="Storage unavailable",
        retry_after_s=5,
    )


def _store_unavailable(exc: EventStoreUnavailableError) -> Problem:
    logger.warning("event store refused a commit for now", extra={"error": str(exc)})
    return Problem(
        "the event store is busy right now and nothing was written; retry in a "
        "moment (with the same Idempotency-Key, if you sent one)",
        status=503,
        kind="event-store-unavailable",
        title="Event store busy",
        retry_after_s=1,
    )


def _no_subscription(exc: SubscriptionNotFoundError) -> Problem:
    return Problem(
        f"no webhook subscription {exc.subscription_id} visible to you; check the id",
        status=404,
        kind="not-found",
        title="Webhook subscription not found",
        subscription_id=str(exc.subscription_id),
    )


def _no_delivery(exc: DeliveryNotFoundError) -> Problem:
    return Problem(
        str(exc),
        status=404,
        kind="not-found",
        title="Webhook delivery not found",
        subscription_id=str(exc.subscription_id),
        audio_id=str(exc.audio_id),
        sequence=exc.sequence,
    )


def _not_parked(exc: DeliveryNotParkedError) -> Problem:
    return Problem(
        str(exc),
        status=409,
        kind="delivery-not-parked",
        title="Only a parked delivery can be re-sent",
        status_now=exc.status,
    )


def _earlier_parked(exc: EarlierDeliveryParkedError) -> Problem:
    return Problem(
        str(exc),
        status=409,
        kind="earlier-delivery-parked",
        title="Re-send the audio's first parked delivery",
        first_parked_sequence=exc.sequence,
        first_parked_event_id=str(exc.event_id),
    )


def _invalid_subscription(exc: InvalidSubscriptionError) -> Problem:
    return Problem(
        f"fix these fields and send again: {exc.location} ({exc.message})",
        status=422,
        kind="invalid-request",
        title="The request does not match the API's schema",
        errors=[{"location": exc.location, "message": exc.message}],
    )


def _subscription_limit(exc: SubscriptionLimitError) -> Problem:
    return Problem(
        str(exc),
        status=409,
        kind="subscription-limit",
        title="Too many webhook subscriptions",
        limit=exc.limit,
    )


def _webhook_access(exc: WebhookAccessError) -> Problem:
    return Problem(str(exc), status=403, kind="forbidden", title="Not allowed")


def _cursor(exc: InvalidCursorError) -> Problem:
    return Problem(
        f"{exc}; send the `next_cursor` of the previous page, or none for the first",
        status=400,
        kind="invalid-cursor",
        title="Invalid cursor",
    )


_MAPPERS: dict[type[Exception], Callable[[Exception], Problem]] = {
    AudioNotFoundError: _not_found,  # type: ignore[dict-item]
    AudioAlreadyRegisteredError: _registered,  # type: ignore[dict-item]
    VersionMismatchError: _version,  # type: ignore[dict-item]
    ConcurrencyError: _concurrent,  # type: ignore[dict-item]
    EventTooLargeError: _too_large,  # type: ignore[dict-item]
    UserErasedError: _user_erased,  # type: ignore[dict-item]
    ErasureForbiddenError: _erasure_forbidden,  # type: ignore[dict-item]
    InvalidStateError: _state,  # type: ignore[dict-item]
    StaleAttemptError: _stale,  # type: ignore[dict-item]
    NotAudioError: _not_audio,  # type: ignore[dict-item]
    AudioObjectMissingError: _missing,  # type: ignore[dict-item]
    AudioStorageError: _storage,  # type: ignore[dict-item]
    EventStoreUnavailableError: _store_unavailable,  # type: ignore[dict-item]
    SubscriptionNotFoundError: _no_subscription,  # type: ignore[dict-item]
    DeliveryNotFoundError: _no_delivery,  # type: ignore[dict-item]
    DeliveryNotParkedError: _not_parked,  # type: ignore[dict-item]
    EarlierDeliveryParkedError: _earlier_parked,  # type: ignore[dict-item]
    InvalidSubscriptionError: _invalid_subscription,  # type: ignore[dict-item]
    SubscriptionLimitError: _subscription_limit,  # type: ignore[dict-item]
    WebhookAccessError: _webhook_access,  # type: ignore[dict-item]
    InvalidCursorError: _cursor,  # type: ignore[dict-item]
}


def as_problem(exc: Exception) -> Problem | None:
    """The problem an error answers with; None for an unexpected error."""
    if isinstance(exc, Problem):
        return exc
    for kind, mapper in _MAPPERS.items():
        if isinstance(exc, kind):
            return mapper(exc)
    return None


def install_command_problems(app: FastAPI) -> None:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        problem = as_problem(exc)
        assert problem is not None, f"{type(exc).__name__} has a mapper"
        return problem.response()

    for kind in _MAPPERS:
        app.add_exception_handler(kind, handle)
