"""The durable outbox: retries with backoff, gives up cleanly, never sends one item twice, and
sends nothing from a transaction that rolled back."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import select

from gateway.outbox import OutboxWorker
from storage.base import utcnow
from storage.outbox import OutboxItem, SendResult, enqueue
from tests.conftest import Clock
from tests.outbox_stand_ins import ScriptedProvider, replies


async def put(sessions, n: int = 1, channel: str = "test") -> None:  # noqa: ANN001
    async with sessions() as session:
        for i in range(n):
            enqueue(session, channel=channel, recipient=f"r{i}", body={"text": f"第{i}条"}, dedupe_key=f"k{i}")
        await session.commit()


async def items(sessions) -> list[OutboxItem]:  # noqa: ANN001
    async with sessions() as session:
        return list((await session.scalars(select(OutboxItem).order_by(OutboxItem.id))).all())


async def test_retry_with_backoff_then_sent(sessions) -> None:
    clock = Clock(utcnow() + dt.timedelta(seconds=1))  # items enqueued just before are due
    provider = ScriptedProvider(SendResult("retry", error="503"), SendResult("retry", error="503"))
    worker = OutboxWorker(sessions, {"test": provider}, base_backoff_s=10, clock=clock)
    await put(sessions)
    assert await worker.deliver_due() == 0
    assert await worker.deliver_due() == 0  # not due yet: backoff 10 s
    assert len(provider.attempts) == 1
    clock.advance(seconds=11)
    assert await worker.deliver_due() == 0  # second failure, next backoff 20 s
    clock.advance(seconds=11)
    assert await worker.deliver_due() == 0
    clock.advance(seconds=10)
    assert await worker.deliver_due() == 1
    [item] = await items(sessions)
    assert (item.status, item.attempts, item.provider_id) == ("sent", 3, f"p-{item.id}")


async def test_gives_up_after_max_attempts_and_keeps_the_item(sessions) -> None:
    clock = Clock(utcnow() + dt.timedelta(seconds=1))  # items enqueued just before are due
    provider = ScriptedProvider(*[SendResult("retry", error="down")] * 5)
    worker = OutboxWorker(sessions, {"test": provider}, max_attempts=3, base_backoff_s=1, clock=clock)
    await put(sessions)
    for _ in range(5):
        await worker.deliver_due()
        clock.advance(seconds=100)
    [item] = await items(sessions)
    assert (item.status, item.attempts, item.last_error) == ("failed", 3, "down")
    assert item.body == {"text": "第0条"}


async def test_held_and_failed_are_not_retried(sessions) -> None:
    provider = ScriptedProvider(SendResult("held", error="45015"), SendResult("failed", error="40003"))
    worker = OutboxWorker(sessions, {"test": provider})
    await put(sessions, 2)
    await worker.deliver_due()
    await worker.deliver_due()
    assert [i.status for i in await items(sessions)] == ["held", "failed"]
    assert len(provider.attempts) == 2


async def test_two_workers_send_each_item_once(sessions) -> None:
    provider = ScriptedProvider(delay_s=0.01)
    a, b = (OutboxWorker(sessions, {"test": provider}) for _ in range(2))
    await put(sessions, 20)
    sent = await asyncio.gather(a.deliver_due(), b.deliver_due())
    assert sum(sent) == 20
    assert sorted(provider.attempts) == sorted(set(provider.attempts))
    assert all(i.status == "sent" for i in await items(sessions))


async def test_crashed_workers_lease_expires(sessions) -> None:
    clock = Clock(utcnow() + dt.timedelta(seconds=1))  # items enqueued just before are due
    await put(sessions)
    worker = OutboxWorker(sessions, {"test": ScriptedProvider()}, lease_s=60, clock=clock)
    [item] = await items(sessions)
    assert await worker._lease(item.id, clock()) is not None  # a worker took it, then died
    assert await worker.deliver_due() == 0
    clock.advance(seconds=61)
    assert await worker.deliver_due() == 1


async def test_rolled_back_transaction_sends_nothing(sessions) -> None:
    async with sessions() as session:
        enqueue(session, channel="test", recipient="r", body={"text": "x"})
        await session.rollback()
    provider = ScriptedProvider()
    assert await OutboxWorker(sessions, {"test": provider}).deliver_due() == 0
    assert provider.attempts == [] and await items(sessions) == []


async def test_unknown_channel_waits_for_its_sender(sessions) -> None:
    await put(sessions, channel="sms")
    assert await OutboxWorker(sessions, {"test": ScriptedProvider()}).deliver_due() == 0
    [item] = await items(sessions)
    assert item.status == "pending"


async def test_a_conversations_replies_leave_in_order_across_workers(sessions) -> None:
    """Two replicas' workers at once: the second reply is not sent while the first is in flight on the
    other worker, and none is sent before the one written before it; a media fetch keeps no order."""
    provider = ScriptedProvider(delay_s=0.05)
    first, second, third, media = await replies(sessions, ["您好", "请提供联系电话", "谢谢"])
    a, b = (OutboxWorker(sessions, {"test": provider}) for _ in range(2))
    await asyncio.gather(a.deliver_due(), b.deliver_due())
    assert provider.attempts[:2] in ([first, media], [media, first])  # the second reply waited
    while await a.deliver_due():
        pass
    assert [i for i in provider.attempts if i != media] == [first, second, third]
    assert all(i.status == "sent" for i in await items(sessions))


async def test_a_reply_waiting_for_its_retry_holds_the_later_ones_but_a_held_one_does_not(sessions) -> None:
    clock = Clock(utcnow() + dt.timedelta(seconds=1))
    provider = ScriptedProvider(SendResult("retry", error="系统繁忙"))
    worker = OutboxWorker(sessions, {"test": provider}, base_backoff_s=10, clock=clock)
    first, second, third, _ = await replies(sessions, ["一", "二", "三"])
    assert await worker.deliver_due() == 1  # the media fetch; the first reply failed, the rest wait
    assert provider.attempts[0] == first and second not in provider.attempts
    clock.advance(seconds=11)
    assert await worker.deliver_due() == 1 and await worker.deliver_due() == 1 and await worker.deliver_due() == 1
    assert [i for i in provider.attempts if i in (first, second, third)] == [first, first, second, third]

    held = ScriptedProvider(SendResult("held", error="45015"))
    worker = OutboxWorker(sessions, {"held": held})
    first, second, _ = await replies(sessions, ["一", "二"], channel="held")
    while await worker.deliver_due():
        pass
    by_id = {i.id: i.status for i in await items(sessions)}
    assert (by_id[first], by_id[second]) == ("held", "sent")
