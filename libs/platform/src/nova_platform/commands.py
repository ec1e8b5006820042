"""The command line every projector shares: serve, `rebuild`, `redrive`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from uuid import UUID

from .rebuild import add_rebuild_parser


def parse_command(prog: str, argv: Sequence[str] | None) -> argparse.Namespace:
    """`<prog>` (serve: `command` is None), `<prog> rebuild` or `<prog> redrive`."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Without a command: consume and serve."
    )
    commands = parser.add_subparsers(dest="command")
    add_rebuild_parser(commands)
    redrive = commands.add_parser(
        "redrive",
        help="rebuild parked audios from the event store and let them flow again",
        description=(
            "For each audio or user this projector parked (or only "
            "--aggregate), apply its stored events, then lift the parked mark. "
            "Run it once the cause of the parking is fixed."
        ),
    )
    redrive.add_argument(
        "--aggregate", type=UUID, help="one audio id, or a user id (`UserErased`)"
    )
    return parser.parse_args(argv)
