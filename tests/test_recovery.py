"""The crash-recovery promise, with the gateway's own timer loops running (the other tests set the
retry interval to an hour and drive passes by hand): messages kept at a crash are answered after a
restart, replies produced after an outage reach the open page, and the outbox survives senders that
raise, hang past their lease, or keep failing."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from pathlib import Path

from sqlalchemy import select

from common.messages import InboundMessage
from gateway.outbox import OutboxWorker, backoff_s
from gateway.router import BOT_DOWN_TEXT
from storage.base import utcnow
from storage.conversations import Conversation, Message
from storage.outbox import OutboxItem, SendResult
from tests.conftest import Chat, Clock, gateway_client, router_of, settings_for
from tests.outbox_stand_ins import ScriptedProvider
from tests.test_outbox import items, put
from tests.wechat_api_server import SlowBot

STAND_IN_ANSWER = "您的留言已收到，请问事情发生在什么地方？"


async def inbound_statuses(client, sender: str) -> list[str]:  # noqa: ANN001
    async with router_of(client).sessions() as session:
        rows = await session.scalars(select(Message.status).join(Conversation).where(
            Conversation.sender_id == sender, Message.direction == "in").order_by(Message.id))
        return list(rows.all())


async def eventually(check, within_s: float = 60.0) -> None:  # noqa: ANN001 - an async predicate
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


async def test_messages_kept_at_a_crash_are_answered_after_a_restart(tmp_path: Path, rasa_url: str) -> None:
    senders = [f"crash-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    # The first process keeps the messages (as a WeChat push is acknowledged) and dies before answering.
    async with gateway_client(settings_for(tmp_path, rasa_url), background=False) as before:
        for sender in senders:
            assert await router_of(before).accept(InboundMessage("web", sender, "小区门口的路灯坏了好几天了",
                                                                message_id=f"{sender}-1"))
        assert [await inbound_statuses(before, s) for s in senders] == [["received"], ["received"]]
    # The restarted process: its own recovery loop (every second here) answers them, nobody drives it.
    later = Clock(utcnow() + dt.timedelta(seconds=60))  # past the 30 s a live turn is given
    async with gateway_client(settings_for(tmp_path, rasa_url, retry_interval_s=1.0), later) as after:
        page = await after.ws_connect(f"/ws?sender={senders[1]}")  # the second citizen's page reconnected
        for sender in senders:
            await eventually(lambda s=sender: _all_done(after, s))
        pushed = await asyncio.wait_for(page.receive_json(), 10)
        assert pushed["type"] == "reply" and "您的诉求属于" in pushed["text"]  # pushed, not left for later
        await page.close()
        # The page's retry of the same message gets the bot's answer, which was kept for it.
        replies = await Chat(after, senders[0]).say("小区门口的路灯坏了好几天了", message_id=f"{senders[0]}-1")
        assert "您的诉求属于" in Chat.text(replies)
        assert await inbound_statuses(after, senders[0]) == ["done"]  # answered once, not twice


async def _all_done(client, sender: str) -> bool:  # noqa: ANN001
    return await inbound_statuses(client, sender) == ["done"]


async def test_the_open_page_gets_the_answer_when_the_bot_comes_back(tmp_path: Path, bot: tuple[SlowBot, str]) -> None:
    stand_in, url = bot
    stand_in.down = True
    async with gateway_client(settings_for(tmp_path, url, retry_interval_s=0.2)) as client:
        ws = await client.ws_connect("/ws?sender=outage-page")
        await ws.send_json({"text": "小区停水三天了", "message_id": "o-1"})
        kept = await asyncio.wait_for(ws.receive_json(), 10)
        assert kept == {"type": "reply", "text": BOT_DOWN_TEXT, "buttons": []}
        assert await asyncio.wait_for(ws.receive_json(), 10) == {"type": "done", "message_id": "o-1"}
        stand_in.down = False  # the bot is back: the retry loop answers and pushes
        pushed = await asyncio.wait_for(ws.receive_json(), 30)
        assert pushed == {"type": "reply", "text": STAND_IN_ANSWER, "buttons": []}
        await ws.close()

        async def delivered() -> bool:  # so it is not released again with the citizen's next message
            async with router_of(client).sessions() as session:
                return (await session.scalars(select(Message.status).where(
                    Message.direction == "out", Message.text == STAND_IN_ANSWER))).all() == ["delivered"]

        await eventually(delivered, 10)


class RaisingProvider(ScriptedProvider):
    """A sender with a bug: raises on its first attempt instead of answering a SendResult."""

    async def send(self, item: OutboxItem) -> SendResult:
        if not self.attempts:
            self.attempts.append(item.id)
            raise RuntimeError("sender bug")
        return await super().send(item)


async def test_a_sender_that_raises_is_retried_and_the_queue_goes_on(sessions) -> None:  # noqa: ANN001
    clock = Clock(utcnow() + dt.timedelta(seconds=1))
    await put(sessions, n=2)
    worker = OutboxWorker(sessions, {"test": RaisingProvider()}, base_backoff_s=5, clock=clock)
    assert await worker.deliver_due() == 1  # the first raised, the second was still sent
    first, second = await items(sessions)
    assert (first.status, first.attempts, second.status) == ("pending", 1, "sent")
    assert first.last_error == "RuntimeError: sender bug"
    clock.advance(seconds=6)
    assert await worker.deliver_due() == 1
    assert [i.status for i in await items(sessions)] == ["sent", "sent"]


class HangingProvider(ScriptedProvider):
    """A provider that takes `delay_s` to answer; counts sends of one item running at once."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s=delay_s)
        self.running = 0
        self.most_at_once = 0

    async def send(self, item: OutboxItem) -> SendResult:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            return await super().send(item)
        finally:
            self.running -= 1


async def test_a_lease_running_out_mid_send_does_not_send_twice(sessions) -> None:  # noqa: ANN001
    """A provider hanging past the lease: the attempt is given up before the lease ends, so a second
    worker taking the item never sends it while the first send still runs; the late outcome of the
    first attempt does not overwrite the second's."""
    await put(sessions)
    provider = HangingProvider(delay_s=3.0)
    a = OutboxWorker(sessions, {"test": provider}, lease_s=1.0, base_backoff_s=0.01)
    b = OutboxWorker(sessions, {"test": provider}, lease_s=1.0, base_backoff_s=0.01)
    await asyncio.sleep(0.01)  # the item is due
    first = asyncio.create_task(a.deliver_due())
    await asyncio.sleep(1.2)  # a's lease has run out
    second = asyncio.create_task(b.deliver_due())
    await asyncio.gather(first, second)
    assert provider.most_at_once == 1
    [item] = await items(sessions)
    assert item.status == "pending" and item.last_error.startswith("no answer within")


async def test_retry_backoff_stops_at_its_cap(sessions) -> None:  # noqa: ANN001
    clock = Clock(utcnow() + dt.timedelta(seconds=1))
    provider = ScriptedProvider(*[SendResult("retry", error="503")] * 6)
    worker = OutboxWorker(sessions, {"test": provider}, base_backoff_s=10, max_backoff_s=45, clock=clock)
    await put(sessions)
    waits = []
    for _ in range(6):
        assert await worker.deliver_due() == 0
        [item] = await items(sessions)
        waits.append((item.next_attempt_at - clock()).total_seconds())
        clock.advance(seconds=waits[-1] + 0.001)
    assert waits == [10, 20, 40, 45, 45, 45] == [backoff_s(n, 10, 45) for n in range(1, 7)]
