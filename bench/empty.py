"""The servers of `raw_http` and `raw_grpc`: an empty route, an empty call.

    python -m bench.empty http PORT   # FastAPI under uvicorn, as serve.py runs it
    python -m bench.empty grpc PORT   # a grpc.aio server with one unary method

The HTTP server gets the arguments `nova_platform.serve.serve` gives uvicorn
(no log config, no access log, the same graceful shutdown), so the gap between
this and a service's route is the service's own work.
"""

from __future__ import annotations

import asyncio
import math
import sys

import grpc
import uvicorn
from fastapi import FastAPI

GRPC_METHOD = "/bench.Empty/Call"
SHUTDOWN_GRACE_S = 20.0


def http_app() -> FastAPI:
    app = FastAPI()

    @app.get("/empty")
    async def empty() -> dict[str, str]:
        return {}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_http(port: int) -> None:
    uvicorn.run(
        http_app(),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(SHUTDOWN_GRACE_S),
    )


async def serve_grpc(port: int) -> None:
    async def call(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        return b""

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.method_handlers_generic_handler(
        "bench.Empty", {"Call": grpc.unary_unary_rpc_method_handler(call)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("http", "grpc") or not argv[1].isdigit():
        sys.stderr.write("usage: python -m bench.empty http|grpc PORT\n")
        return 2
    kind, port = argv[0], int(argv[1])
    if kind == "http":
        serve_http(port)
    else:
        asyncio.run(serve_grpc(port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
