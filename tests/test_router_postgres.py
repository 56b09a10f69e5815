"""The router's units of work on PostgreSQL, where they run through AsyncSession.run_sync rather
than on SQLite's thread: a web turn, a retried message, a batch of accepted pushes, and two
replicas starting the same citizen's conversation at the same moment; and two replicas' outbox
workers keeping a conversation's replies in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.messages import InboundMessage
from gateway.bot_client import RasaClient
from gateway.cluster import postgres_available
from gateway.coordination import LocalCoordinator
from gateway.outbox import OutboxWorker
from gateway.router import Router
from gateway.schema import migrate
from profiles import load as load_profile
from storage.conversations import Conversation, Message
from storage.db import make_engine, make_sessions
from storage.outbox import OutboxItem
from tests.outbox_stand_ins import ScriptedProvider, replies
from tests.wechat_api_server import SlowBot

pytestmark = pytest.mark.skipif(not postgres_available(), reason="needs Debian's postgresql binaries and root")


@pytest.fixture
async def pg_sessions(pg_url: str) -> AsyncIterator[list[async_sessionmaker[AsyncSession]]]:
    """Two engines on one migrated database: two gateway replicas."""
    await migrate(pg_url)
    engines = [make_engine(pg_url) for _ in range(2)]
    yield [make_sessions(e) for e in engines]
    for engine in engines:
        await engine.dispose()


async def count(sessions: async_sessionmaker[AsyncSession], model: type, *where: object) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_turns_retries_and_batches_on_postgres(
    pg_sessions: list[async_sessionmaker[AsyncSession]], bot: tuple[SlowBot, str]
) -> None:
    _, url = bot
    sessions = pg_sessions[0]
    async with aiohttp.ClientSession() as http:
        router = Router(sessions, RasaClient(url, http, concurrency=0), LocalCoordinator(), load_profile("jiyuan"))
        router.outbox_channels.add("wechat:mini")
        try:
            first = await router.handle(InboundMessage("web", "pg-citizen", "小区路灯坏了", message_id="w1"))
            assert first and "什么地方" in first[0].text
            # A retry through another replica (its own claims) finds the stored message and its answer.
            other = Router(pg_sessions[1], RasaClient(url, http, concurrency=0), LocalCoordinator(),
                           load_profile("jiyuan"))
            again = await other.handle(InboundMessage("web", "pg-citizen", "小区路灯坏了", message_id="w1"))
            other.close()
            assert [r.text for r in again] == [r.text for r in first]
            assert await count(sessions, Message, Message.direction == "in", Message.status == "done") == 1

            accepted = [
                await router.accept(InboundMessage("wechat:mini", f"openid-{i % 2}", f"第{i}条", message_id=f"p{i}"))
                for i in range(3)
            ]
            assert all(conv is not None for conv in accepted)
            assert len({conv.id for conv in accepted if conv is not None}) == 2
            for conv in {c.id: c for c in accepted if c is not None}.values():
                await router.process(conv)
            assert await count(sessions, Message, Message.direction == "in", Message.status == "received") == 0
            assert await count(sessions, OutboxItem, OutboxItem.channel == "wechat:mini") == 3
        finally:
            router.close()


async def test_two_replicas_start_one_conversation_once_on_postgres(
    pg_sessions: list[async_sessionmaker[AsyncSession]], bot: tuple[SlowBot, str]
) -> None:
    stand_in, url = bot
    async with aiohttp.ClientSession() as http:
        routers = [Router(s, RasaClient(url, http, concurrency=0), LocalCoordinator(), load_profile("jiyuan"))
                   for s in pg_sessions]
        try:
            for n in range(5):  # several rounds: the insert race is not won the same way each time
                sender = f"race-{n}"
                replies = await asyncio.gather(*(
                    r.handle(InboundMessage("web", sender, f"路灯坏了{i}", message_id=f"{sender}-{i}"))
                    for i, r in enumerate(routers)
                ))
                assert all(replies)
                assert await count(pg_sessions[0], Conversation, Conversation.sender_id == sender) == 1
                conv_messages = select(Conversation.id).where(Conversation.sender_id == sender).scalar_subquery()
                assert await count(pg_sessions[0], Message, Message.conversation_id == conv_messages,
                                   Message.direction == "in") == 2
            assert stand_in.calls >= 10
        finally:
            for r in routers:
                r.close()


async def test_two_replicas_outbox_workers_keep_a_conversations_order_on_postgres(
    pg_sessions: list[async_sessionmaker[AsyncSession]],
) -> None:
    provider = ScriptedProvider(delay_s=0.05)
    first, second, third, media = await replies(pg_sessions[0], ["您好", "请提供联系电话", "谢谢"], channel="pg")
    a, b = (OutboxWorker(sessions, {"pg": provider}) for sessions in pg_sessions)
    await asyncio.gather(a.deliver_due(), b.deliver_due())
    assert sorted(provider.attempts) == sorted([first, media])  # the second reply waited for the first
    while await b.deliver_due():
        pass
    assert [i for i in provider.attempts if i != media] == [first, second, third]
    assert await count(pg_sessions[0], OutboxItem, OutboxItem.channel == "pg", OutboxItem.status == "sent") == 4
