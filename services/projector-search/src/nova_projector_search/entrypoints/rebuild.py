"""`nova-projector-search rebuild`: a fresh index, then an atomic alias swap.

Creates `<alias>-r<UTC timestamp>` with the transcript mappings, replays the
whole event store into it through `SearchProjector`, catches up with the events
topic, moves the alias to it in one `update_aliases` call (readers and the live
projector, which both use the alias, follow at once), keeps following the topic
for a grace period, and prints the new index's name. The previous index is
left in place.

A rebuild writes nothing to Kafka and joins no consumer group, so the
integration service never sees it: no webhook, no EventBridge event. See
`nova_platform.rebuild` for the steps and why they lose no event.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from contextlib import AsyncExitStack

from opensearchpy import AsyncOpenSearch, NotFoundError

from nova_platform.aws import client_kwargs, session
from nova_platform.logging import configure_logging
from nova_platform.personal import open_personal_data
from nova_platform.rebuild import (
    RebuildError,
    RebuildReport,
    describe,
    rebuild_name,
    replay_and_switch,
    require_topic,
)
from nova_platform.resources import search_index_body
from nova_platform.settings import NovaSettings

from ..adapters.opensearch_index import OpenSearchIndex
from ..application.projector import SearchProjector

logger = logging.getLogger(__name__)

# The alias moves atomically and the live projector resolves it on every bulk
# request: the grace only lets requests already in flight land.
DEFAULT_GRACE_S = 1.0


async def aliased_indices(client: AsyncOpenSearch, alias: str) -> list[str]:
    """The indices `alias` points at now (none when it does not exist)."""
    try:
        found = await client.indices.get_alias(name=alias)
    except NotFoundError:
        return []
    return sorted(found)


async def move_alias(client: AsyncOpenSearch, alias: str, index: str) -> list[str]:
    """Point `alias` at `index` only, in one atomic call; returns the old ones."""
    previous = [i for i in await aliased_indices(client, alias) if i != index]
    actions: list[dict[str, dict[str, str]]] = [
        {"remove": {"index": old, "alias": alias}} for old in previous
    ]
    actions.append({"add": {"index": index, "alias": alias}})
    await client.indices.update_aliases(body={"actions": actions})
    logger.info(
        "alias moved", extra={"alias": alias, "index": index, "previous": previous}
    )
    return previous


async def rebuild_search_index(
    settings: NovaSettings, *, grace_s: float | None = None
) -> RebuildReport:
    """Rebuild the transcript index into a new index and move the alias to it.

    Raises `RebuildError` saying which index readers use.
    """
    alias = settings.search_alias
    target = rebuild_name(alias)
    await require_topic(settings)
    client = AsyncOpenSearch(hosts=[settings.opensearch_url], timeout=30)
    try:
        previous = await aliased_indices(client, alias)
        report = RebuildReport(target=target, previous=previous)
        if await client.indices.exists(index=target):
            raise RebuildError(
                f"the index {target} exists already (another rebuild in the same "
                "second?); wait a second and run the rebuild again"
            )
        await client.indices.create(index=target, body=search_index_body())

        async def switch() -> None:
            report.previous = await move_alias(client, alias, target)

        try:
            async with AsyncExitStack() as stack:
                ddb = await stack.enter_async_context(
                    session().client("dynamodb", **client_kwargs(settings))
                )
                personal = await open_personal_data(settings, stack, ddb)
                projector = SearchProjector(
                    OpenSearchIndex(client, target),
                    wait_for_erasure=personal.wait_for_erasure,
                )
                await replay_and_switch(
                    settings,
                    ddb,
                    report,
                    projector.project,
                    switch,
                    grace_s=DEFAULT_GRACE_S if grace_s is None else grace_s,
                    personal=personal,
                )
        except Exception as exc:
            if report.switched:
                state = (
                    f"{alias} points at {target} already; run the rebuild again "
                    "to be sure it holds every event"
                )
            else:
                state = (
                    f"{alias} still points at {', '.join(previous) or 'nothing'}; "
                    f"the unfinished {target} can be deleted: "
                    f"{delete_hint(settings, target)}"
                )
            raise RebuildError(f"{exc}; {state}") from exc
    finally:
        await client.close()
    return report


def delete_hint(settings: NovaSettings, index: str) -> str:
    return f"curl -X DELETE {settings.opensearch_url.rstrip('/')}/{index}"


def run_rebuild(settings: NovaSettings, grace_s: float | None = None) -> int:
    """The `rebuild` command: logs on stderr, the new index's name on stdout."""
    configure_logging("projector-search-rebuild", settings.log_level)
    try:
        report = asyncio.run(rebuild_search_index(settings, grace_s=grace_s))
    except RebuildError as exc:
        logger.exception("rebuild failed")
        sys.stderr.write(f"rebuild failed: {exc}\n")
        return 1
    sys.stdout.write(
        describe(report, "index", lambda index: delete_hint(settings, index))
    )
    return 0
