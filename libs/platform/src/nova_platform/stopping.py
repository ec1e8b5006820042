"""Stopping a background task: its own stop signal first, cancellation last.

On Python 3.11 `asyncio.wait_for` returns normally when the task awaiting it
is cancelled just as the awaited call completes (fixed in 3.12), and redis-py,
aiokafka and aiobotocore bound their calls with it. A loop stopped only by
`task.cancel(); await task` then goes on and the stop waits forever. So every
background loop here checks an explicit stop signal (a flag or an event) at
each turn, is cancelled only as a backstop, and is waited for within a bound:
`stop_task`. It never uses `asyncio.wait_for` on the task, which on a timeout
cancels the task and then waits for it without any bound.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)

BACKSTOP_S = 5.0
"""How long a task gets to end once cancelled."""


async def stop_task(
    task: asyncio.Task[Any],
    *,
    what: str,
    grace_s: float = 0.0,
    backstop_s: float = BACKSTOP_S,
) -> bool:
    """Wait for `task`, already told to stop, to end; True once it has.

    It gets `grace_s` to end by itself, is then cancelled and gets `backstop_s`
    more. A task still running after that is left behind with a warning (the
    process is stopping anyway) and False is returned. A failure of the task
    is logged, not raised: a stop goes on with whatever comes next. When the
    caller is cancelled meanwhile, the task is cancelled too.
    """
    try:
        if not task.done() and grace_s > 0:
            await asyncio.wait({task}, timeout=grace_s)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=backstop_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.done():
        logger.warning(
            "%s did not stop within %.1f s; leaving it behind",
            what,
            grace_s + backstop_s,
        )
        return False
    if not task.cancelled() and (failure := task.exception()) is not None:
        logger.error("%s failed while stopping", what, exc_info=failure)
    return True
