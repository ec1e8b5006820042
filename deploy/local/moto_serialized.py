"""moto's server answering one request at a time, for the local stack.

moto's own server handles each request in a thread, and its DynamoDB backend
does not make a condition check and the write it guards one step: under load,
two conditional `PutItem`s on the same key can both pass (seen by the fault
tests on two busy cores). DynamoDB itself never lets that happen, and Nova's
guarantees rest on it. Holding one lock around each request gives the local
stack the same atomicity. It costs no parallelism worth having: moto works
in memory under the GIL. Connections still get their own threads, so an idle
keep-alive connection never blocks the others.

Usage: ``python moto_serialized.py -H 127.0.0.1 -p 5000`` (run by stack.py
with the project's venv, which has moto[server]).
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialized(app: WsgiApp) -> WsgiApp:
    """`app` answering one request at a time; the body is built under the lock."""
    lock = threading.Lock()

    def one_at_a_time(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        with lock:
            # moto's responses are built in memory: joining them here keeps
            # every read and write of its state inside the lock.
            return [b"".join(app(environ, start_response))]

    return one_at_a_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        serialized(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
