"""`nova-projector-readmodel rebuild`: a fresh read-model table, then the switch.

Creates `<read model table>-r<UTC timestamp>` with the read model's layout,
replays the whole event store into it through `ReadModelProjector`, catches up
with the events topic, points the `read-model` pointer of `nova-projections`
at it (query-api and the live projector follow within
`NOVA_PROJECTION_POINTER_TTL_S`), keeps following the topic for twice that plus
a second, and prints the new table's name. The previous table is left in place.

A rebuild writes nothing to Kafka and joins no consumer group, so the
integration service never sees it: no webhook, no EventBridge event. See
`nova_platform.rebuild` for the steps and why they lose no event.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from contextlib import AsyncExitStack

from botocore.exceptions import ClientError

from nova_platform.aws import client_kwargs, session
from nova_platform.logging import configure_logging
from nova_platform.personal import open_personal_data
from nova_platform.projections import ActiveReadModelTable, read_pointer
from nova_platform.rebuild import (
    RebuildError,
    RebuildReport,
    describe,
    rebuild_name,
    replay_and_switch,
    require_topic,
)
from nova_platform.resources import ensure_table, projections_table, read_model_table
from nova_platform.settings import NovaSettings

from ..adapters.dynamodb_read_model import DynamoDBReadModel
from ..application.projector import ReadModelProjector

logger = logging.getLogger(__name__)


def delete_hint(table: str) -> str:
    return f"aws dynamodb delete-table --table-name {table}"


async def rebuild_read_model(
    settings: NovaSettings, *, grace_s: float | None = None
) -> RebuildReport:
    """Rebuild the read model into a new table and switch readers to it.

    `grace_s` (default: twice the pointer TTL plus one second) is how long the
    topic is still followed after the switch, while every process's cached
    pointer expires. Raises `RebuildError` saying which table readers use.
    """
    if grace_s is None:
        grace_s = 2 * settings.projection_pointer_ttl_s + 1.0
    target = rebuild_name(settings.read_model_table)
    await require_topic(settings)
    async with AsyncExitStack() as stack:
        ddb = await stack.enter_async_context(
            session().client("dynamodb", **client_kwargs(settings))
        )
        personal = await open_personal_data(settings, stack, ddb)
        await ensure_table(ddb, projections_table(settings))
        previous = await read_pointer(ddb, settings) or settings.read_model_table
        report = RebuildReport(target=target, previous=[previous])
        try:
            await ensure_table(ddb, read_model_table(settings, target), exist_ok=False)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
            raise RebuildError(
                f"the table {target} exists already (another rebuild in the same "
                "second?); wait a second and run the rebuild again"
            ) from exc
        pointer = ActiveReadModelTable(ddb, settings)
        projector = ReadModelProjector(
            DynamoDBReadModel(ddb, target),
            wait_for_erasure=personal.wait_for_erasure,
        )

        async def switch() -> None:
            await pointer.point_at(target)

        try:
            await replay_and_switch(
                settings,
                ddb,
                report,
                projector.project,
                switch,
                grace_s=grace_s,
                personal=personal,
            )
        except Exception as exc:
            if report.switched:
                state = (
                    f"readers use {target} already; run the rebuild again to be "
                    "sure the active table holds every event"
                )
            else:
                state = (
                    f"readers still use {previous}; the unfinished {target} can "
                    f"be deleted: {delete_hint(target)}"
                )
            raise RebuildError(f"{exc}; {state}") from exc
    return report


def run_rebuild(settings: NovaSettings, grace_s: float | None = None) -> int:
    """The `rebuild` command: logs on stderr, the new table's name on stdout."""
    configure_logging("projector-readmodel-rebuild", settings.log_level)
    try:
        report = asyncio.run(rebuild_read_model(settings, grace_s=grace_s))
    except RebuildError as exc:
        logger.exception("rebuild failed")
        sys.stderr.write(f"rebuild failed: {exc}\n")
        return 1
    sys.stdout.write(describe(report, "table", delete_hint))
    return 0
