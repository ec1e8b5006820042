"""Sends stored deliveries: each lane in order, no endpoint holding back another.

A lane is one audio's deliveries to one subscription. Its deliveries go out
one at a time in `sequence` order: a delivery waits until the one before it is
delivered. When one is parked, those behind it are parked too ("behind <event
id>"), so a re-send replays the lane in order.

An attempt is recorded with `record_attempt`, under the lease it was made
with, and writes the delivery's state alone, never its body: an erasure's
purge while the request was in flight stays purged.

Once a `user.erased` delivery is delivered or parked, its subscription is
deleted with every delivery it has (see `Fanout`): the user is erased, and
nothing of theirs is kept or sent any more. The other deliveries go first,
then the subscription, then the `user.erased` delivery itself, which stays
pending under its lease until then: a stop or a crash half way leaves it due,
and the next attempt finishes the deletion.

Lanes run as their own tasks. A lane whose endpoint fails sleeps until its
next attempt without holding anything; at most `per_subscription` requests go
to one subscription at once and `concurrency` in all, so a slow endpoint uses
its own share and the other subscriptions go on. A subscription whose last
request was not answered with a 2xx is *failing*: all failing subscriptions
together get at most half of `concurrency`, so endpoints that hang until the
timeout cannot take every slot from the ones that answer.

The store is the truth; this process keeps only wake-up times. The consumer
wakes the lanes it added deliveries to, and every `poll_interval_s` the
dispatcher asks the store for pending deliveries that are due, which finds
the retries it scheduled, re-sends ordered through the API, and the work of
an instance that stopped. Before each attempt it claims the delivery with a
lease in the store, so two instances never send one delivery at once.

When `stop` is called (the service stops) no lane starts and no delivery is
claimed any more; requests in flight get `drain_s` to finish and be recorded.
Those still unanswered then are cut off and handed back: the attempt is
recorded as interrupted (not counted against the retry budget), the lease is
cleared and the delivery is due at once, so another instance, or this one
restarted, sends it again without waiting for the lease to run out. `run`
then returns, within `stop_within_s`. Cancelling `run` stops it the same way,
but only as a backstop: on Python 3.11 a cancellation that arrives as a store
call completes can be lost (see `nova_platform.stopping`), and a loop that
only waited for it would go on forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from uuid import UUID

from nova_events import UserErased
from nova_platform.batches import is_transient
from nova_platform.webhooks import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Subscription,
    SubscriptionNotFoundError,
    WebhookStore,
)
from nova_platform.webhooks.model import MAX_RECORDED_ATTEMPTS

from ..domain.payload import PUBLIC_EVENT_TYPES
from ..domain.retry import RetryPolicy, SendResult, Verdict
from .ports import WebhookSender

logger = logging.getLogger(__name__)

Lane = tuple[UUID, UUID]

STORE_RETRY_S = 2.0
SUBSCRIPTION_TTL_S = 5.0
HAND_BACK_S = 5.0
"""How long stopping waits for the interrupted deliveries to be handed back."""
INTERRUPTED = "interrupted: the integration service stopped before an answer came"
USER_ERASED = PUBLIC_EVENT_TYPES[UserErased.event_type()]
FORGET_PAGE = 100
"""Deliveries read per page while deleting an erased user's subscription."""


class Dispatcher:
    def __init__(
        self,
        store: WebhookStore,
        sender: WebhookSender,
        policy: RetryPolicy,
        *,
        concurrency: int = 32,
        per_subscription: int = 4,
        lease_s: float = 60.0,
        poll_interval_s: float = 2.0,
        drain_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_attempt: Callable[[Verdict, SendResult], None] | None = None,
    ) -> None:
        self._store = store
        self._sender = sender
        self._policy = policy
        self._slots = asyncio.Semaphore(concurrency)
        self._failing_slots = asyncio.Semaphore(max(1, concurrency // 2))
        self._failing: set[UUID] = set()
        self._per_subscription = per_subscription
        self._endpoint_slots: dict[UUID, asyncio.Semaphore] = {}
        self._lease_s = lease_s
        self._poll_interval_s = poll_interval_s
        self._drain_s = drain_s
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._on_attempt = on_attempt
        self._wake_at: dict[Lane, float] = {}
        self._queue: list[tuple[float, Lane]] = []
        self._running: dict[Lane, asyncio.Task[None]] = {}
        self._again: set[Lane] = set()
        self._changed = asyncio.Event()
        self._subscriptions: dict[UUID, tuple[float, Subscription | None]] = {}
        self._sends: set[asyncio.Task[SendResult]] = set()
        self._stopping = False
        self.sent = 0

    def notify(self, lanes: Iterable[Lane]) -> None:
        """Wake these lanes now (the consumer stored deliveries in them)."""
        now = self._clock()
        for lane in lanes:
            self._schedule(lane, now)

    async def run(self) -> None:
        """Dispatch until `stop` (or a cancellation); then stop within
        `stop_within_s` (see the module's docstring)."""
        next_poll = 0.0
        try:
            while not self._stopping:
                # Cleared first: whatever happens from here on wakes the wait.
                self._changed.clear()
                now = self._clock()
                if now >= next_poll:
                    await self._poll(now)
                    next_poll = now + self._poll_interval_s
                self._start_due(now)
                wait = next_poll - now
                if self._queue:
                    wait = min(wait, self._queue[0][0] - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), max(wait, 0.0))
        finally:
            await self._stop()

    def stop(self) -> None:
        """Make `run` claim nothing more, finish or hand back what is in
        flight and return, whether or not a cancellation reaches it."""
        self._stopping = True
        self._changed.set()

    @property
    def stop_within_s(self) -> float:
        """The longest `run` takes to return once stopped: the drain, handing
        back the cut-off deliveries, and cancelling the lanes that are stuck."""
        return self._drain_s + 2 * HAND_BACK_S

    async def _stop(self) -> None:
        self._stopping = True
        lanes = set(self._running.values())
        try:
            if not lanes:
                return
            _, unfinished = await asyncio.wait(lanes, timeout=self._drain_s)
            if not unfinished:
                return
            for send in self._sends:
                send.cancel()  # `_attempt` hands its delivery back
            _, stuck = await asyncio.wait(unfinished, timeout=HAND_BACK_S)
            if stuck:
                logger.warning(
                    "%d webhook lanes did not stop in time; their leases run out",
                    len(stuck),
                )
                for task in stuck:
                    task.cancel()
                # Bounded: a lane whose cancellation is lost must not hold the stop.
                await asyncio.wait(stuck, timeout=HAND_BACK_S)
        except asyncio.CancelledError:
            for task in lanes:
                task.cancel()
            raise

    @property
    def stopping(self) -> bool:
        """True once `stop` was called or `run` cancelled: nothing new is
        claimed."""
        return self._stopping

    def idle(self) -> bool:
        """True when no lane is running or waiting (for tests)."""
        return not self._running and not self._queue

    def _schedule(self, lane: Lane, when: float) -> None:
        if self._stopping:
            return  # what is due stays due in the store
        if lane in self._running:
            self._again.add(lane)  # look again once the running pass ends
            return
        current = self._wake_at.get(lane)
        if current is not None and current <= when:
            return
        self._wake_at[lane] = when
        heapq.heappush(self._queue, (when, lane))
        self._changed.set()

    def _start_due(self, now: float) -> None:
        while not self._stopping and self._queue and self._queue[0][0] <= now:
            when, lane = heapq.heappop(self._queue)
            if self._wake_at.get(lane) != when or lane in self._running:
                continue  # superseded by an earlier wake-up, or already running
            del self._wake_at[lane]
            self._running[lane] = asyncio.create_task(self._drive(lane))

    async def _poll(self, now: float) -> None:
        try:
            lanes = await self._store.due(now)
        except Exception:
            logger.exception("could not look for due webhook deliveries")
            return
        for lane in lanes:
            self._schedule(lane, now)

    async def _drive(self, lane: Lane) -> None:
        wake: float | None
        try:
            wake = await self._work(lane)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            wake = self._clock() + STORE_RETRY_S
            logger.log(
                logging.WARNING if is_transient(exc) else logging.ERROR,
                "webhook lane failed; trying again",
                exc_info=True,
                extra={"subscription_id": str(lane[0]), "audio_id": str(lane[1])},
            )
        finally:
            self._running.pop(lane, None)
            self._changed.set()
        if lane in self._again:
            self._again.discard(lane)
            wake = self._clock()
        if wake is not None:
            self._schedule(lane, wake)

    async def _work(self, lane: Lane) -> float | None:
        """Send the lane's deliveries in order; when to look again, or None."""
        while not self._stopping:
            deliveries = await self._store.lane(*lane)
            open_ = [
                d
                for d in deliveries
                if d.status in (DeliveryStatus.PENDING, DeliveryStatus.PARKED)
            ]
            if not open_:
                return None
            first = open_[0]
            if first.status is DeliveryStatus.PARKED:
                await self._park_behind(first, open_[1:])
                return None
            now = self._clock()
            if first.next_attempt_at > now:
                return first.next_attempt_at
            if first.lease_until > now:
                return first.lease_until
            subscription = await self._subscription(first.subscription_id)
            if subscription is None:
                await self._cancel([d for d in open_ if d.event_type != USER_ERASED])
                # What a deletion of an erased user's subscription left when it
                # stopped before its last step (see `_forget`): finish it.
                await self._store.delete_deliveries(
                    [d for d in open_ if d.event_type == USER_ERASED]
                )
                return None
            if not await self._attempt(subscription, first):
                return self._clock() + STORE_RETRY_S
        return None

    async def _attempt(self, subscription: Subscription, delivery: Delivery) -> bool:
        """Claim and send `delivery`; False when another instance has it, or
        when the dispatcher is stopping."""
        sid = subscription.subscription_id
        slots = self._endpoint_slots.setdefault(
            sid, asyncio.Semaphore(self._per_subscription)
        )
        # Claimed only once a slot is free: a lane waiting for a slot leaves its
        # delivery to any other instance that has one.
        async with contextlib.AsyncExitStack() as held:
            await held.enter_async_context(slots)
            if sid in self._failing:
                await held.enter_async_context(self._failing_slots)
            await held.enter_async_context(self._slots)
            if self._stopping:
                return False
            started = self._clock()
            claimed = await self._store.claim(
                delivery, now=started, lease_s=self._lease_s
            )
            if not claimed:
                return False
            lease_until = started + self._lease_s  # what `claim` stored
            sending = asyncio.create_task(self._sender.send(subscription, delivery))
            self._sends.add(sending)
            try:
                await asyncio.wait({sending})
            except asyncio.CancelledError:
                sending.cancel()
                raise
            finally:
                self._sends.discard(sending)
        if sending.cancelled():
            await self._hand_back(delivery, started, lease_until)
            return True
        result = sending.result()
        if result.response_code is not None and 200 <= result.response_code < 300:
            self._failing.discard(sid)
        else:
            self._failing.add(sid)
        used = delivery.attempts_used + 1
        decision = self._policy.decide(result, used, self._rng)
        attempt = Attempt(
            at=started,
            latency_ms=round(result.latency_ms, 1),
            response_code=result.response_code,
            outcome=decision.verdict.value,
            error=result.error[:500],
        )
        if decision.verdict is Verdict.DELIVERED:
            updated = delivery.with_attempt(attempt, status=DeliveryStatus.DELIVERED)
        elif decision.verdict is Verdict.RETRY:
            updated = delivery.with_attempt(
                attempt,
                status=DeliveryStatus.PENDING,
                next_attempt_at=self._clock() + decision.delay_s,
            )
        else:
            updated = delivery.with_attempt(
                attempt, status=DeliveryStatus.PARKED, parked_reason=decision.reason
            )
        if delivery.event_type == USER_ERASED and decision.verdict is not Verdict.RETRY:
            await self._forget(delivery)
        elif not await self._store.record_attempt(updated, lease_until=lease_until):
            logger.warning(
                "webhook attempt not recorded: its lease ran out and another "
                "instance has the delivery, or the delivery was deleted",
                extra={
                    "subscription_id": str(delivery.subscription_id),
                    "audio_id": str(delivery.audio_id),
                    "event_id": str(delivery.event_id),
                    "sequence": delivery.sequence,
                },
            )
        if decision.verdict is Verdict.DELIVERED:
            self.sent += 1
        if self._on_attempt is not None:
            self._on_attempt(decision.verdict, result)
        logger.log(
            logging.WARNING if decision.verdict is Verdict.PARKED else logging.INFO,
            f"webhook {decision.verdict.value}",
            extra={
                "subscription_id": str(delivery.subscription_id),
                "audio_id": str(delivery.audio_id),
                "event_id": str(delivery.event_id),
                "sequence": delivery.sequence,
                "attempt": used,
                "response_code": result.response_code,
                "latency_ms": attempt.latency_ms,
                "retry_in_s": round(decision.delay_s, 2),
                "reason": decision.reason,
            },
        )
        return True

    async def _hand_back(
        self, delivery: Delivery, started: float, lease_until: float
    ) -> None:
        """Record the interrupted attempt and make the delivery due now, with
        no lease (the receiver may have had the request: it deduplicates)."""
        now = self._clock()
        attempt = Attempt(
            at=started,
            latency_ms=round((now - started) * 1000, 1),
            response_code=None,
            outcome=Verdict.RETRY.value,
            error=INTERRUPTED,
        )
        await self._store.record_attempt(
            replace(
                delivery,
                attempts=(*delivery.attempts, attempt)[-MAX_RECORDED_ATTEMPTS:],
                next_attempt_at=now,
                lease_until=0.0,
            ),
            lease_until=lease_until,
        )
        logger.info(
            "webhook attempt interrupted by the stop; handed back",
            extra={
                "subscription_id": str(delivery.subscription_id),
                "audio_id": str(delivery.audio_id),
                "event_id": str(delivery.event_id),
                "sequence": delivery.sequence,
            },
        )

    async def _park_behind(self, parked: Delivery, rest: list[Delivery]) -> None:
        for delivery in rest:
            if delivery.status is DeliveryStatus.PENDING:
                await self._store.save(
                    replace(
                        delivery,
                        status=DeliveryStatus.PARKED,
                        parked_reason=f"behind parked event {parked.event_id}",
                        lease_until=0.0,
                    )
                )

    async def _cancel(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            await self._store.save(
                replace(
                    delivery,
                    status=DeliveryStatus.CANCELLED,
                    parked_reason="the subscription was deleted",
                    lease_until=0.0,
                )
            )

    async def _forget(self, erased: Delivery) -> None:
        """Delete the subscription `erased` (its `user.erased` delivery, sent
        or parked) belongs to, with every delivery it has; that one last."""
        sid = erased.subscription_id
        cursor: str | None = None
        deleted = 0
        while True:
            page, cursor = await self._store.deliveries(
                sid, limit=FORGET_PAGE, cursor=cursor
            )
            others = [d for d in page if d.event_id != erased.event_id]
            await self._store.delete_deliveries(others)
            deleted += len(others)
            if cursor is None:
                break
        with contextlib.suppress(SubscriptionNotFoundError):
            await self._store.delete_subscription(sid)
        self._subscriptions[sid] = (self._clock() + SUBSCRIPTION_TTL_S, None)
        self._failing.discard(sid)
        await self._store.delete_deliveries([erased])
        logger.info(
            "an erased user's webhook subscription deleted with its deliveries",
            extra={"subscription_id": str(sid), "deliveries": deleted + 1},
        )

    async def _subscription(self, subscription_id: UUID) -> Subscription | None:
        now = self._clock()
        cached = self._subscriptions.get(subscription_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self._store.get_subscription(subscription_id)
        self._subscriptions[subscription_id] = (now + SUBSCRIPTION_TTL_S, found)
        return found
