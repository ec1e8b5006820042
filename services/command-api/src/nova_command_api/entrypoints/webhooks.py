"""REST routes for webhook subscriptions and their deliveries:
`/commands/webhooks/*`, included by `create_app`."""

# No `from __future__ import annotations` here: FastAPI evaluates the
# `Depends(...)` annotations, which name the dependency given to the factory.

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nova_platform.auth import Principal
from nova_platform.http.problems import (
    AUTH_PROBLEMS,
    INVALID_REQUEST,
    problem_responses,
)
from nova_platform.webhooks import (
    ALL_EVENT_TYPES,
    Attempt,
    Delivery,
    DeliveryStatus,
    Subscription,
)

from ..application.commands import Actor
from ..application.webhooks import (
    DESCRIPTION_MAX_LENGTH,
    DESCRIPTION_PATTERN,
    PUBLIC_EVENT_TYPES,
    SECRET_MAX_LENGTH,
    SECRET_MIN_LENGTH,
    SECRET_PATTERN,
    NewSubscription,
    WebhookSubscriptions,
)
from .idempotency import KEY_PATTERN, IdempotentRunner, check_key, fingerprint

_EVENT_TYPES_DOC = ", ".join(f"`{t}`" for t in PUBLIC_EVENT_TYPES)
_READ = {
    **AUTH_PROBLEMS,
    **INVALID_REQUEST,
    410: "`user-erased`: you were erased (an admin may still list, read and "
    "delete an erased user's subscriptions)",
}
_ONE = {**_READ, 404: "`not-found`: no such subscription visible to you"}
_OWNER_ERASED = {410: "`user-erased`: you, or the subscription's owner, were erased"}
_IN_USE = "`idempotency-key-in-use` / `-released` (retry with the same key)"


class CreateWebhookRequest(BaseModel):
    """A URL to POST events to, the event types wanted, and a signing secret."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2048,
        description=(
            "an `http://` or `https://` URL on a public address, without "
            "credentials or `#fragment`"
        ),
        # Documents the form only; the handler checks it (and the address).
        json_schema_extra={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
    )
    event_types: list[str] = Field(
        min_length=1,
        max_length=len(PUBLIC_EVENT_TYPES),
        description=f'the event types to receive: {_EVENT_TYPES_DOC}; or `["*"]` '
        "for all of them",
        json_schema_extra={
            "anyOf": [
                {"items": {"enum": list(PUBLIC_EVENT_TYPES)}},
                {"items": {"const": ALL_EVENT_TYPES}},
            ]
        },
    )
    secret: str | None = Field(
        default=None,
        min_length=SECRET_MIN_LENGTH,
        max_length=SECRET_MAX_LENGTH,
        description=(
            "the key deliveries are signed with (printable ASCII); leave it out to "
            "get a generated one. It is only shown in this answer"
        ),
        json_schema_extra={"pattern": SECRET_PATTERN},
    )
    description: str | None = Field(
        default=None,
        max_length=DESCRIPTION_MAX_LENGTH,
        description="a note for yourself, without control characters",
        json_schema_extra={"pattern": DESCRIPTION_PATTERN},
    )
    user_id: UUID | None = Field(
        default=None,
        description="admins only: the user whose events the subscription receives",
    )


class WebhookOut(BaseModel):
    """A subscription, without its secret."""

    subscription_id: UUID
    user_id: UUID = Field(description="the owner; only their events are delivered")
    url: str
    event_types: list[str] = Field(description='sorted; `["*"]` means all')
    description: str
    created_at: datetime = Field(description="RFC 3339, UTC")


class CreatedWebhook(WebhookOut):
    """The new subscription, with its secret: store it now, it is not shown again."""

    secret: str = Field(
        description="the HMAC key deliveries are signed with; only shown here"
    )


class WebhookList(BaseModel):
    items: list[WebhookOut] = Field(description="oldest first")


class AttemptOut(BaseModel):
    at: datetime = Field(description="when the attempt started, RFC 3339, UTC")
    latency_ms: float
    response_code: int | None = Field(
        description="the receiver's HTTP status; null when no response came"
    )
    outcome: str = Field(description="`delivered`, `retry` or `parked`")
    error: str = Field(description="why the attempt failed, when it did")


class DeliveryOut(BaseModel):
    event_id: UUID
    event_type: str = Field(description="the public event type")
    audio_id: UUID
    sequence: int = Field(description="the event's position in its audio's history")
    status: DeliveryStatus
    attempts_used: int = Field(description="attempts counted since the last re-send")
    next_attempt_at: datetime | None = Field(
        description="RFC 3339, UTC; null when not pending"
    )
    parked_reason: str = Field(description="why it was parked, when it is")
    created_at: datetime
    attempts: list[AttemptOut] = Field(description="oldest first (the newest 50)")


class DeliveryPage(BaseModel):
    items: list[DeliveryOut] = Field(description="by audio, then sequence")
    next_cursor: str | None = Field(
        description="send as `cursor` for the next page; null on the last"
    )


class RequeuedDelivery(BaseModel):
    audio_id: UUID
    sequence: int
    event_id: UUID


class ResendAccepted(BaseModel):
    requeued: list[RequeuedDelivery] = Field(
        description="the delivery and the parked ones behind it in its lane, in order"
    )


def _time(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _webhook(subscription: Subscription) -> WebhookOut:
    return WebhookOut(
        subscription_id=subscription.subscription_id,
        user_id=subscription.user_id,
        url=subscription.url,
        event_types=sorted(subscription.event_types),
        description=subscription.description,
        created_at=_time(subscription.created_at),
    )


def _attempt(attempt: Attempt) -> AttemptOut:
    return AttemptOut(
        at=_time(attempt.at),
        latency_ms=attempt.latency_ms,
        response_code=attempt.response_code,
        outcome=attempt.outcome,
        error=attempt.error,
    )


def _delivery(delivery: Delivery) -> DeliveryOut:
    pending = delivery.status is DeliveryStatus.PENDING
    return DeliveryOut(
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        audio_id=delivery.audio_id,
        sequence=delivery.sequence,
        status=delivery.status,
        attempts_used=delivery.attempts_used,
        next_attempt_at=_time(delivery.next_attempt_at) if pending else None,
        parked_reason=delivery.parked_reason,
        created_at=_time(delivery.created_at),
        attempts=[_attempt(a) for a in delivery.attempts],
    )


def _json(model: BaseModel, status: int, **headers: str) -> JSONResponse:
    return JSONResponse(
        model.model_dump(mode="json"), status_code=status, headers=headers or None
    )


def webhook_router(writer: Callable[..., Awaitable[Principal]]) -> APIRouter:
    """The routes; `writer` is the dependency that admits `audio:write` callers.

    They use `app.state.webhooks` (a `WebhookSubscriptions`) and
    `app.state.idempotency`, both set by the app's lifespan.
    """
    router = APIRouter(prefix="/commands/webhooks", tags=["webhooks"])
    Writer = Annotated[Principal, Depends(writer)]  # noqa: N806 - a type alias
    IdempotencyKey = Annotated[  # noqa: N806 - a type alias
        str | None,
        Header(
            alias="Idempotency-Key",
            description="send the same key again to get the first answer back",
            json_schema_extra={"pattern": KEY_PATTERN},
        ),
    ]

    def service(request: Request) -> WebhookSubscriptions:
        found: WebhookSubscriptions = request.app.state.webhooks
        return found

    def actor(principal: Principal) -> Actor:
        return Actor(principal.user_id, is_admin=principal.is_admin)

    def runner(request: Request) -> IdempotentRunner:
        found: IdempotentRunner = request.app.state.idempotency
        return found

    async def admit(request: Request, principal: Principal, key: str | None) -> None:
        """Before the runner, so an erased caller gets no replay of an answer
        recorded before the erasure; a malformed key is refused first."""
        if key is not None:
            check_key(key)
        await service(request).admit(actor(principal))

    @router.post(
        "",
        status_code=201,
        response_model=CreatedWebhook,
        summary="Subscribe a URL to your audio events; the answer holds its secret",
        responses=problem_responses(
            {
                **_READ,
                400: "`invalid-idempotency-key`",
                403: "`forbidden`: no `audio:write` scope, or `user_id` of another "
                "user without `admin`",
                409: f"`subscription-limit`, or {_IN_USE}",
                410: "`user-erased`: you, or the user named in `user_id`, were erased",
                422: "`invalid-request` (e.g. a private or malformed `url`) or "
                "`idempotency-key-reused`",
            }
        ),
    )
    async def create_webhook(
        request: Request,
        body: CreateWebhookRequest,
        principal: Writer,
        key: IdempotencyKey = None,
    ) -> Response:
        async def run() -> Response:
            created = await service(request).create(
                actor(principal),
                NewSubscription(
                    url=body.url,
                    event_types=body.event_types,
                    secret=body.secret,
                    description=body.description,
                    user_id=body.user_id,
                ),
            )
            answer = CreatedWebhook(
                **_webhook(created).model_dump(), secret=created.secret
            )
            location = f"/commands/webhooks/{created.subscription_id}"
            return _json(answer, 201, Location=location)

        await admit(request, principal, key)
        print_ = fingerprint("webhook-create", body.model_dump_json())
        return await runner(request).run(principal.user_id, key, print_, run)

    @router.get(
        "",
        response_model=WebhookList,
        summary="Your subscriptions (an admin: one user's, or everyone's)",
        responses=problem_responses(_READ),
    )
    async def list_webhooks(
        request: Request,
        principal: Writer,
        user_id: Annotated[
            UUID | None,
            Query(description="admins only: this user's subscriptions; else all"),
        ] = None,
    ) -> WebhookList:
        found = await service(request).subscriptions(actor(principal), user_id)
        return WebhookList(items=[_webhook(s) for s in found])

    @router.get(
        "/{subscription_id}",
        response_model=WebhookOut,
        summary="One subscription, without its secret",
        responses=problem_responses(_ONE),
    )
    async def get_webhook(
        subscription_id: UUID, request: Request, principal: Writer
    ) -> WebhookOut:
        found = await service(request).get(actor(principal), subscription_id)
        return _webhook(found)

    @router.delete(
        "/{subscription_id}",
        status_code=204,
        response_class=Response,
        summary="Delete a subscription; deliveries not sent yet are cancelled",
        responses=problem_responses(_ONE),
    )
    async def delete_webhook(
        subscription_id: UUID, request: Request, principal: Writer
    ) -> Response:
        await service(request).delete(actor(principal), subscription_id)
        return Response(status_code=204)

    @router.get(
        "/{subscription_id}/deliveries",
        response_model=DeliveryPage,
        summary="A subscription's deliveries and every attempt made to send them",
        responses=problem_responses(
            {
                **_ONE,
                **_OWNER_ERASED,
                400: "`invalid-cursor`: send a `next_cursor` unchanged",
            }
        ),
    )
    async def list_deliveries(
        subscription_id: UUID,
        request: Request,
        principal: Writer,
        status: Annotated[
            DeliveryStatus | None, Query(description="only deliveries in this state")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100, description="page size")] = 50,
        cursor: Annotated[
            str | None,
            Query(max_length=512, description="`next_cursor` of the previous page"),
        ] = None,
    ) -> DeliveryPage:
        found, next_cursor = await service(request).deliveries(
            actor(principal), subscription_id, status=status, limit=limit, cursor=cursor
        )
        return DeliveryPage(
            items=[_delivery(d) for d in found], next_cursor=next_cursor
        )

    @router.post(
        "/{subscription_id}/deliveries/{audio_id}/{sequence}/resend",
        status_code=202,
        response_model=ResendAccepted,
        summary="Send a parked delivery again, and the parked ones behind it",
        responses=problem_responses(
            {
                **_ONE,
                400: "`invalid-idempotency-key`",
                404: "`not-found`: no such subscription or delivery visible to you",
                409: f"`delivery-not-parked`, `earlier-delivery-parked`, or {_IN_USE}",
                **_OWNER_ERASED,
                422: "`invalid-request` or `idempotency-key-reused`",
            }
        ),
    )
    async def resend_delivery(
        subscription_id: UUID,
        audio_id: UUID,
        sequence: Annotated[int, Path(ge=0)],
        request: Request,
        principal: Writer,
        key: IdempotencyKey = None,
    ) -> Response:
        async def run() -> Response:
            requeued = await service(request).resend(
                actor(principal), subscription_id, audio_id, sequence
            )
            answer = ResendAccepted(
                requeued=[
                    RequeuedDelivery(
                        audio_id=d.audio_id, sequence=d.sequence, event_id=d.event_id
                    )
                    for d in requeued
                ]
            )
            return _json(answer, 202)

        await admit(request, principal, key)
        print_ = fingerprint(
            "webhook-resend", str(subscription_id), str(audio_id), str(sequence)
        )
        return await runner(request).run(principal.user_id, key, print_, run)

    return router
