"""A cap on request bodies, enforced before and while they are received.

`BodySizeLimit` is a pure ASGI middleware, so it sees the body as the server
delivers it, chunk by chunk, before any framework parses it:

- a `Content-Length` over the limit is answered 413 at once, without reading
  a byte of the body (and, for `Expect: 100-continue`, without inviting it);
- a body without one (`Transfer-Encoding: chunked`) is counted as it arrives;
  the chunk that crosses the limit makes `receive` raise `BodyTooLargeError`,
  and the middleware answers 413 instead of whatever the app made of that.

Add it outermost, e.g. `app.add_middleware(BodySizeLimit, max_bytes=...)`
after the other middlewares, so no one buffers the body before it counts.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import problem_response

MiB = 1024 * 1024


class BodyTooLargeError(Exception):
    """Raised from `receive` once a request body has grown past the limit.

    `BodySizeLimit` turns it into a 413 problem if the response has not
    started; an app has no need to catch it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        super().__init__(f"the request body is over {max_bytes} bytes")


def describe_limit(max_bytes: int) -> str:
    """`max_bytes` as people read it, e.g. "100 MB (104857600 bytes)".

    MB here is 1024 * 1024 bytes; the exact count follows for the pedantic.
    """
    return f"{round(max_bytes / MiB, 2):g} MB ({max_bytes} bytes)"


class BodySizeLimit:
    """Answers 413 `application/problem+json` to bodies over `max_bytes`.

    The problem's `detail` names the limit and what to do; its `max_bytes`
    extension gives the limit as a number. Other scopes (websocket, lifespan)
    pass through untouched.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLargeError(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                # The app answered a body it never got whole (FastAPI, for one,
                # turns any error while reading into a 400): the 413 replaces it.
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # Whatever the cut-off body made the app raise, the cause is its size.
            if not exceeded or started:
                raise
        if exceeded and not started:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            "request-too-large",
            "Request body too large",
            f"the request body is larger than {describe_limit(self.max_bytes)}, "
            "the most this API accepts; send a smaller file, e.g. a shorter or "
            "more compressed recording (Opus, MP3, AAC)",
            max_bytes=self.max_bytes,
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed length itself
    return None
