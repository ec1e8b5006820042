"""`nova-init`: create Nova's tables, bucket, topic and index where missing."""

from __future__ import annotations

import asyncio
import logging

from .logging import configure_logging
from .resources import ensure_all
from .settings import NovaSettings

logger = logging.getLogger(__name__)


def main() -> int:
    settings = NovaSettings()
    configure_logging("nova-init", settings.log_level)
    asyncio.run(ensure_all(settings))
    logger.info(
        "resources ready",
        extra={
            "tables": [
                settings.event_store_table,
                settings.read_model_table,
                settings.relay_lease_table,
                settings.idempotency_table,
                settings.parking_table,
                settings.projections_table,
                settings.webhooks_table,
            ],
            "bucket": settings.audio_bucket,
            "topics": [
                settings.events_topic,
                settings.dead_letter_topic,
                settings.relay_checkpoint_topic,
            ],
            "search_alias": settings.search_alias,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
