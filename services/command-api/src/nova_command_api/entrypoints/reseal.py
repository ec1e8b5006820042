"""`nova-relay reseal [--dry-run]`: seal the events stored before sealing.

Scans the whole event store and rewrites, in place, each event whose personal
fields are still in plaintext (see `application.reseal`). With `--dry-run` it
only counts what it would seal and shred, and creates no key. Safe to stop and
to run again: what is sealed is skipped, every write is conditional.
"""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack

from nova_platform.aws import client_kwargs, session
from nova_platform.personal import open_personal_data
from nova_platform.settings import NovaSettings

from ..adapters.dynamodb_reseal import DynamoDBStoredEvents
from ..application.reseal import Resealer, ResealReport


async def reseal(settings: NovaSettings, *, dry_run: bool) -> ResealReport:
    async with AsyncExitStack() as stack:
        ddb = await stack.enter_async_context(
            session().client("dynamodb", **client_kwargs(settings))
        )
        personal = await open_personal_data(settings, stack, ddb)
        events = DynamoDBStoredEvents(ddb, settings.event_store_table)
        return await Resealer(events, personal, dry_run=dry_run).run()


def print_report(report: ResealReport) -> int:
    """Writes the report; the exit code is 1 while plaintext is left."""
    for line in report.lines():
        sys.stdout.write(f"{line}\n")
    if report.plaintext_left and not report.dry_run:
        sys.stdout.write(
            f"{report.plaintext_left} legacy events still hold personal data in "
            "plaintext; see the reasons above\n"
        )
        return 1
    return 0
