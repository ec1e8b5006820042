"""REST routes that erase a user: `/commands/users/*`, included by `create_app`."""

# No `from __future__ import annotations` here: FastAPI evaluates the
# `Depends(...)` annotations, which name the dependency given to the factory.

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from nova_events import EventMetadata
from nova_platform.auth import Principal, Scope
from nova_platform.http.problems import (
    AUTH_PROBLEMS,
    INVALID_REQUEST,
    Forbidden,
    problem_responses,
)

from ..application.commands import Actor, EraseUser
from ..application.erasure import ErasureResult, UserErasure
from .idempotency import KEY_PATTERN, CommandRun, IdempotentRunner, fingerprint

MetadataOf = Callable[[Principal, CommandRun], EventMetadata]

_PROBLEMS = problem_responses(
    {
        400: "`invalid-idempotency-key`",
        **AUTH_PROBLEMS,
        409: "`idempotency-key-in-use` / `-released` (retry with the same key)",
        **INVALID_REQUEST,
        503: "`event-store-unavailable` or `storage-unavailable`: retry after "
        "`Retry-After` seconds; a retry finishes the erasure",
    }
)


class UserErasedAnswer(BaseModel):
    """The user's personal data is erased everywhere Nova keeps it."""

    user_id: UUID
    erased_at: datetime = Field(
        description="when the user's data key was destroyed (RFC 3339, UTC); the "
        "same on every retry"
    )
    version: int = Field(description="the version of the user's stream (UserErased)")
    objects_deleted: int = Field(
        description="audio files deleted by this call (0 on a retry that found "
        "them gone)"
    )


def _answer(result: ErasureResult) -> JSONResponse:
    body = UserErasedAnswer(
        user_id=result.user_id,
        erased_at=result.erased_at,
        version=result.version,
        objects_deleted=result.objects_deleted,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200)


def user_router(
    writer: Callable[..., Awaitable[Principal]],
    caller: Callable[..., Awaitable[Principal]],
    metadata_of: MetadataOf,
) -> APIRouter:
    """The routes; `writer` admits `audio:write` callers, `caller` any valid
    token, `metadata_of` builds the events' metadata.

    They use `app.state.erasure` (a `UserErasure`) and `app.state.idempotency`.
    """
    router = APIRouter(prefix="/commands/users", tags=["users"])
    Writer = Annotated[Principal, Depends(writer)]  # noqa: N806 - a type alias
    IdempotencyKey = Annotated[  # noqa: N806 - a type alias
        str | None,
        Header(
            alias="Idempotency-Key",
            description="send the same key again to get the first answer back",
            json_schema_extra={"pattern": KEY_PATTERN},
        ),
    ]

    async def admin(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if not principal.has(Scope.ADMIN):
            raise Forbidden(
                "erasing another user needs a token with the `admin` scope; to "
                "erase your own account use DELETE /commands/users/me"
            )
        return principal

    Admin = Annotated[Principal, Depends(admin)]  # noqa: N806 - a type alias

    async def erase(
        request: Request, principal: Principal, user_id: UUID, key: str | None
    ) -> Response:
        erasure: UserErasure = request.app.state.erasure
        runner: IdempotentRunner = request.app.state.idempotency
        command = EraseUser(
            Actor(principal.user_id, is_admin=principal.is_admin), user_id
        )

        async def run(run: CommandRun) -> Response:
            done = await erasure.erase_user(command, metadata_of(principal, run))
            return _answer(done)

        print_ = fingerprint("erase-user", str(user_id))
        return await runner.run_command(principal.user_id, key, print_, run)

    @router.delete(
        "/me",
        status_code=200,
        response_model=UserErasedAnswer,
        summary="Delete your account: erase your personal data everywhere",
        responses=_PROBLEMS,
        description=(
            "Destroys your data key, so every transcript, title, file name and "
            "storage key you ever gave Nova becomes unreadable in the event "
            "store, on Kafka and in every projection rebuilt from them; deletes "
            "your audio files; and records `UserErased`, which the read model, "
            "the search index and your webhooks honour. Safe to retry: a retry "
            "finishes an erasure that stopped midway. Afterwards commands for "
            "you or your audio answer 410 `user-erased`."
        ),
    )
    async def erase_me(
        request: Request, principal: Writer, key: IdempotencyKey = None
    ) -> Response:
        return await erase(request, principal, principal.user_id, key)

    @router.delete(
        "/{user_id}",
        status_code=200,
        response_model=UserErasedAnswer,
        summary="Erase a user's personal data everywhere (admin)",
        responses=_PROBLEMS,
        description="As `DELETE /commands/users/me`, for any user; `admin` scope.",
    )
    async def erase_user(
        user_id: UUID,
        request: Request,
        principal: Admin,
        key: IdempotencyKey = None,
    ) -> Response:
        return await erase(request, principal, user_id, key)

    return router
