"""The gate in front of Rasa and the answering workers, against a stand-in speaking Rasa's REST webhook."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from sqlalchemy import func, select

from common.messages import InboundMessage
from gateway.answering import Answering
from gateway.bot_client import BotUnavailable, RasaClient
from gateway.coordination import LocalCoordinator
from gateway.router import Router
from profiles import load as load_profile
from storage.conversations import Message
from tests.wechat_api_server import SlowBot


async def test_gate_admits_a_few_at_a_time_in_arrival_order(bot: tuple[SlowBot, str]) -> None:
    stand_in, url = bot
    stand_in.delay_s = 0.05
    async with aiohttp.ClientSession() as http:
        client = RasaClient(url, http, timeout_s=10, concurrency=2)
        sends = []
        for i in range(8):
            sends.append(asyncio.create_task(client.send(f"s{i}", f"m{i}", {})))
            await asyncio.sleep(0)  # each reaches the gate before the next is created
        replies = await asyncio.gather(*sends)
    assert all(r and r[0]["text"] for r in replies)
    assert stand_in.max_in_flight == 2
    # Waiters are admitted first come first served; the two admitted at once may swap on the wire.
    assert sorted(stand_in.messages[:2]) == ["m0", "m1"]
    assert stand_in.messages[2:] == [f"m{i}" for i in range(2, 8)]


async def test_gate_wait_counts_against_the_timeout(bot: tuple[SlowBot, str]) -> None:
    """Alone, a message takes 0.3 s and fits the 0.4 s timeout; behind another at the gate it does not,
    and the caller (the router) keeps it and retries rather than holding the citizen. The gate is not
    leaked by a message that timed out."""
    stand_in, url = bot
    stand_in.delay_s = 0.3
    async with aiohttp.ClientSession() as http:
        client = RasaClient(url, http, timeout_s=0.4, concurrency=1)
        first = asyncio.create_task(client.send("a", "first", {}))
        await asyncio.sleep(0)
        started = asyncio.get_running_loop().time()
        with pytest.raises(BotUnavailable):
            await client.send("b", "second", {})
        assert asyncio.get_running_loop().time() - started < 0.55
        assert (await first)[0]["text"]
        await asyncio.sleep(0.3)  # the timed-out request's bot call ends
        assert (await client.send("c", "third", {}))[0]["text"]
    assert stand_in.messages[0] == "first" and stand_in.messages[-1] == "third"


async def test_answering_bounds_concurrency_and_answers_each_message_once(sessions, bot: tuple[SlowBot, str]) -> None:  # noqa: ANN001
    stand_in, url = bot
    stand_in.delay_s = 0.05
    async with aiohttp.ClientSession() as http:
        router = Router(sessions, RasaClient(url, http, concurrency=0), LocalCoordinator(), load_profile("jiyuan"))
        router.outbox_channels.add("sms")
        answering = Answering(router, workers=3)
        try:
            for i in range(9):
                for j in range(2):  # two messages per citizen, submitted twice: one pass answers both
                    conv = await router.accept(InboundMessage("sms", f"1380000{i:04d}", f"路灯坏了{j}", message_id=f"{i}-{j}"))
                    assert conv is not None
                    answering.submit(conv)
            for _ in range(200):
                if stand_in.calls == 18:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)
        finally:
            await answering.close()
    assert stand_in.calls == 18
    assert stand_in.max_in_flight <= 3
    async with sessions() as session:
        answered = await session.scalar(select(func.count()).where(Message.direction == "in", Message.status == "done"))
        replies = await session.scalar(select(func.count()).where(Message.direction == "out"))
    assert (answered, replies) == (18, 18)
