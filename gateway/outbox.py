"""The durable outbox: what must reach a provider is written with the change that caused it, then
delivered by a worker with retries, so a provider outage or a restart delays a message but never
loses it (the transactional outbox pattern).

Several replicas may run workers on one database: an item is leased by a conditional UPDATE, so
each attempt is made by one worker only, and a lease left by a crashed worker expires.

Replies reach a citizen in the order they were written: a reply (an item carrying a message) is not
due while an earlier reply of the same conversation on the same channel is still to be sent (in
flight on any replica, or waiting for its retry). Held and failed replies do not block the ones
after them; items that are not replies (media fetches, surveys) keep no order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from sqlalchemy import and_, bindparam, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, aliased

from gateway.metrics import Metrics
from storage.base import utcnow
from storage.db import UnitOfWork, in_session
from storage.outbox import OutboxItem, Sender, SendResult

log = logging.getLogger(__name__)

UNSENT = ("pending", "sending")
_earlier = aliased(OutboxItem)
# An earlier reply of the same conversation on the same channel that is not sent yet.
_EARLIER_UNSENT = exists().where(
    OutboxItem.message_id.is_not(None),
    _earlier.message_id.is_not(None),
    _earlier.conversation_id == OutboxItem.conversation_id,
    _earlier.channel == OutboxItem.channel,
    _earlier.id < OutboxItem.id,
    _earlier.status.in_(UNSENT),
)
# Due now, on a channel with a sender: built once with bind parameters, because the worker polls
# while idle and building this statement cost more than running it.
_DUE = and_(
    OutboxItem.channel.in_(bindparam("channels", expanding=True)),
    or_(
        and_(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= bindparam("now")),
        and_(OutboxItem.status == "sending", OutboxItem.lease_until < bindparam("now")),
    ),
    ~_EARLIER_UNSENT,
)
_DUE_IDS = select(OutboxItem.id).where(_DUE).order_by(OutboxItem.id).limit(bindparam("batch"))
_LEASE = (
    update(OutboxItem)
    .where(OutboxItem.id == bindparam("item_id"), _DUE)
    .values(status="sending", lease_until=bindparam("lease_until"), attempts=OutboxItem.attempts + 1)
)


# Channels register their senders here in setup_runtime, keyed by the outbox item's channel.
SENDERS = web.AppKey("outbox_senders", dict)


def backoff_s(attempts: int, base_s: float, cap_s: float) -> float:
    return min(cap_s, base_s * 2 ** max(0, attempts - 1))


class OutboxWorker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        senders: Mapping[str, Sender],
        *,
        batch: int = 50,
        max_attempts: int = 10,
        base_backoff_s: float = 2.0,
        max_backoff_s: float = 600.0,
        lease_s: float = 60.0,
        clock: Callable[[], dt.datetime] = utcnow,
        transact: UnitOfWork | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.metrics = metrics or Metrics()
        # Each step (find due items, lease one, record the outcome) is one unit of work: on SQLite one
        # thread hop instead of a dozen round trips, which mattered as the outbox polls while idle.
        self.transact = transact or functools.partial(in_session, sessions)
        self.senders = senders
        self.batch = batch
        self.max_attempts = max_attempts
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.lease_s = lease_s
        self.clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Called after a commit that enqueued something, so replies leave at once, not on the next tick."""
        self._wake.set()

    def _due_params(self, now: dt.datetime) -> dict[str, Any]:
        return {"channels": list(self.senders), "now": now}  # senders register after the worker is made

    async def deliver_due(self) -> int:
        """One pass over due items; returns how many were sent."""
        now = self.clock()
        params = self._due_params(now) | {"batch": self.batch}
        ids = await self.transact(lambda session: session.scalars(_DUE_IDS, params).all())
        sent = 0
        for item_id in ids:
            item = await self._lease(item_id, now)
            if item is not None:
                sent += await self._attempt(item)
        return sent

    async def _lease(self, item_id: int, now: dt.datetime) -> OutboxItem | None:
        """Leased right before its attempt (not a batch at once), so a slow provider cannot make a
        later item's lease run out while it waits its turn."""
        lease = now + dt.timedelta(seconds=self.lease_s)

        def work(session: Session) -> OutboxItem | None:
            result = session.execute(_LEASE, self._due_params(now) | {"item_id": item_id, "lease_until": lease})
            if result.rowcount != 1:
                return None  # another worker has it
            return session.get(OutboxItem, item_id)

        return await self.transact(work)

    async def _attempt(self, item: OutboxItem) -> int:
        sender = self.senders[item.channel]
        try:
            # Within half the lease: a provider that hangs past it would let another worker lease
            # the item and send it a second time while this attempt still runs.
            async with asyncio.timeout(self.lease_s / 2):
                result = await sender.send(item)
        except TimeoutError:
            result = SendResult("retry", error=f"no answer within {self.lease_s / 2:.0f}s")
        except Exception as exc:  # a sender bug must not stop the queue; the item is retried
            log.exception("outbox %s: sender for %s raised", item.id, item.channel)
            result = SendResult("retry", error=f"{type(exc).__name__}: {exc}")
        self.metrics.deliveries.labels(item.channel, result.outcome).inc()
        now = self.clock()
        values: dict[str, Any] = {"lease_until": None, "last_error": result.error[:2000]}
        if result.outcome == "sent":
            values.update(status="sent", sent_at=now, provider_id=result.provider_id)
        elif result.outcome == "retry" and item.attempts < self.max_attempts:
            delay = result.retry_after_s or backoff_s(item.attempts, self.base_backoff_s, self.max_backoff_s)
            values.update(status="pending", next_attempt_at=now + dt.timedelta(seconds=delay))
        elif result.outcome == "held":
            values.update(status="held")
        else:
            values.update(status="failed")
        if result.outcome != "sent":
            log.warning("outbox %s (%s): %s after %d attempts: %s", item.id, item.channel,
                        values["status"], item.attempts, result.error)
        # Only while this attempt's lease is the item's latest: a stale outcome never overwrites a newer one.
        record = update(OutboxItem).where(OutboxItem.id == item.id, OutboxItem.attempts == item.attempts).values(**values)
        await self.transact(lambda session: session.execute(record))
        return 1 if result.outcome == "sent" else 0

    async def run(self, interval_s: float = 1.0) -> None:
        """Deliver until cancelled; woken early by wake()."""
        while True:
            try:
                while await self.deliver_due():
                    pass
            except Exception:
                log.exception("outbox pass failed; will try again")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval_s)
            except TimeoutError:
                pass
