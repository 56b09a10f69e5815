"""The fault matrix (docs/reliability.md) on the production shape: two gateway replicas, two Rasa
servers sharing a PostgreSQL tracker store and Rasa's RedisLockStore, one action server,
redis-server and PostgreSQL, all real (gateway.cluster).

Citizens file complaints through both replicas while a part fails. Each citizen behaves as the web
page does: on 503 or a dropped connection it sends the same message id again (to the other replica
when one is gone), and while the answer is "kept, the bot is busy" it asks again later. Every fault
must end with: every message stored once and answered, one work order per citizen, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cluster import Cluster, postgres_available, start_cluster
from gateway.router import BOT_DOWN_TEXT, FAILING_TEXT
from handoff.models import WorkOrder
from storage.conversations import Conversation, Message
from storage.db import make_engine

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.rasa,
    pytest.mark.skipif(not postgres_available(), reason="needs Debian's postgresql binaries and root"),
]

SCRIPT = (
    "昨天晚上十点多，济源市天坛路和济源大道路口的烧烤店噪音太大，吵得根本睡不着，我要投诉",
    "{phone}",  # each citizen's own: the same phone and matter would be attached to one order as a repeat
    "匿名",
    "/affirm",
)
NOT_ANSWERED = {BOT_DOWN_TEXT, FAILING_TEXT}
ANSWER_WITHIN_S = 240.0  # a replica killed holds its conversation lock in Redis for 60 s


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Recovery passes every second, as operators would run it; the test waits for them, never drives them.
    with start_cluster(gateways=2, rasa=2, HOTLINE_RETRY_INTERVAL_S="1") as started:
        yield started


@pytest.fixture
async def db(cluster: Cluster) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(cluster.database_url)
    yield engine
    await engine.dispose()


class Citizen:
    """A web citizen whose page retries the same message id until it has a real answer."""

    def __init__(self, http: aiohttp.ClientSession, urls: list[str], first: int = 0) -> None:
        self.http, self.sender = http, f"fault-{uuid.uuid4().hex[:10]}"
        self.urls = itertools.cycle(urls[first:] + urls[:first])
        self.url = next(self.urls)
        self.answers: list[str] = []
        self.phone = f"138{uuid.uuid4().int % 10**8:08d}"

    async def say(self, n: int, text: str) -> str:
        text = text.format(phone=self.phone)
        body = {"sender": self.sender, "message": text, "message_id": f"{self.sender}-{n}"}
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while time.monotonic() < deadline:
            try:
                async with self.http.post(f"{self.url}/webhooks/rest/webhook", json=body,
                                          timeout=aiohttp.ClientTimeout(total=90)) as resp:
                    replies = await resp.json() if resp.status == 200 else None
            except (aiohttp.ClientError, TimeoutError):
                self.url = next(self.urls)  # that replica is gone: the page's next try goes elsewhere
                await asyncio.sleep(1)
                continue
            texts = [r["text"] for r in replies or [] if r["text"] not in NOT_ANSWERED]
            if texts:
                self.answers.append("\n".join(texts))
                return self.answers[-1]
            await asyncio.sleep(2)  # 503 "not kept", or kept and not answered yet: ask again
        raise AssertionError(f"message {n} of {self.sender} not answered within {ANSWER_WITHIN_S:.0f}s")

    async def file_complaint(self, between: Callable[[int], None] | None = None) -> str:
        for n, text in enumerate(SCRIPT):
            if between is not None:
                between(n)
            await self.say(n, text)
        return self.answers[-1]


async def check_outcome(db: AsyncEngine, citizens: list[Citizen]) -> None:
    """0 messages lost, every message stored once and answered, one work order per citizen."""
    senders = [c.sender for c in citizens]
    async with db.connect() as conn:
        inbound = (await conn.execute(
            select(Conversation.sender_id, Message.provider_message_id, Message.status)
            .join(Message, Message.conversation_id == Conversation.id)
            .where(Conversation.sender_id.in_(senders), Message.direction == "in")
        )).all()
        orders = (await conn.execute(
            select(Conversation.sender_id, func.count(WorkOrder.id))
            .join(WorkOrder, WorkOrder.conversation_id == Conversation.id)
            .where(Conversation.sender_id.in_(senders)).group_by(Conversation.sender_id)
        )).all()
    expected = sorted(f"{s}-{n}" for s in senders for n in range(len(SCRIPT)))
    assert sorted(row.provider_message_id for row in inbound) == expected  # none lost, none twice
    assert {row.status for row in inbound} == {"done"}, sorted({row.status for row in inbound})
    assert dict(orders) == dict.fromkeys(senders, 1)  # one work order each, none duplicated
    for citizen in citizens:
        assert "工单号" in citizen.answers[-1], citizen.answers[-1]


async def run_citizens(cluster: Cluster, n: int, between: Callable[[int], None] | None = None) -> list[Citizen]:
    async with aiohttp.ClientSession() as http:
        citizens = [Citizen(http, cluster.gateway_urls, first=i % 2) for i in range(n)]
        await asyncio.gather(*(c.file_complaint(between if i == 0 else None) for i, c in enumerate(citizens)))
    return citizens


@contextlib.contextmanager
def frozen(*pids: int) -> Iterator[None]:
    """SIGSTOP: the processes hold their connections and answer nothing, as a hung server does."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def wait_for_stored(db: AsyncEngine, message_id: str, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        async with db.connect() as conn:
            if await conn.scalar(select(func.count()).select_from(Message)
                                 .where(Message.provider_message_id == message_id)):
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{message_id} was never stored")


async def test_gateway_killed_mid_turn_the_kept_message_is_answered(cluster: Cluster, db: AsyncEngine) -> None:
    """kill -9 of the replica answering a message: the message it kept is answered by the other
    replica's crash recovery, the citizen's retry gets that answer, and the complaint is filed once."""
    victim = cluster.gateways[0]
    async with aiohttp.ClientSession() as http:
        citizen = Citizen(http, cluster.gateway_urls, first=0)
        await citizen.say(0, SCRIPT[0])
        rasa_pids = [r.proc.pid for r in cluster.rasa if r.proc is not None]
        with frozen(*rasa_pids):  # the turn is in flight at the bot when the replica dies
            turn = asyncio.create_task(citizen.say(1, SCRIPT[1]))
            await wait_for_stored(db, f"{citizen.sender}-1")
            victim.kill()
        await turn  # the page retried on the surviving replica until it had the answer
        victim.start()  # as the supervisor would bring it back
        for n in (2, 3):
            await citizen.say(n, SCRIPT[n])
    await check_outcome(db, [citizen])


async def test_redis_stopped_mid_turn(cluster: Cluster, db: AsyncEngine) -> None:
    """redis-server stopped while a turn is at the bot, started again empty (no persistence: every
    claim and lock lost) while other citizens talk. Rasa's lock store fails and its REST channel
    answers 200 with no messages: that is not an answer, the message waits for the bot."""
    others = asyncio.create_task(run_citizens(cluster, 2))
    async with aiohttp.ClientSession() as http:
        citizen = Citizen(http, cluster.gateway_urls)
        await citizen.say(0, SCRIPT[0])
        with frozen(*(r.proc.pid for r in cluster.rasa if r.proc is not None)):
            turn = asyncio.create_task(citizen.say(1, SCRIPT[1]))
            await wait_for_stored(db, f"{citizen.sender}-1")
            await asyncio.sleep(0.5)  # the request is at the (frozen) bot
            cluster.redis.stop()
        await asyncio.sleep(3)  # Rasa's lock store fails while Redis is down
        cluster.redis.start()
        await turn
        for n in (2, 3):
            await citizen.say(n, SCRIPT[n])
    await check_outcome(db, [citizen, *await others])


async def test_postgres_restarted_mid_conversation(cluster: Cluster, db: AsyncEngine) -> None:
    """PostgreSQL stopped in crash mode and started again: gateways and Rasa's tracker store reconnect."""
    loop = asyncio.get_running_loop()

    def crash_postgres(n: int) -> None:
        if n == 2:
            loop.run_in_executor(None, lambda: (cluster.postgres.stop("immediate"), time.sleep(2),
                                                cluster.postgres.start()))

    citizens = await run_citizens(cluster, 3, crash_postgres)
    await check_outcome(db, citizens)


async def test_one_rasa_server_stopped_the_other_answers(cluster: Cluster, db: AsyncEngine) -> None:
    cluster.rasa[0].stop()
    try:
        citizens = await run_citizens(cluster, 3)
    finally:
        cluster.rasa[0].start()
    await check_outcome(db, citizens)
    assert all("繁忙" not in answer for c in citizens for answer in c.answers)  # nobody waited


async def test_rasa_and_action_server_stopped_messages_wait_and_are_answered(
    cluster: Cluster, db: AsyncEngine
) -> None:
    """Every bot process down: messages are kept as pending, answered when the bot is back."""
    loop = asyncio.get_running_loop()
    bot_parts = [*cluster.rasa, cluster.actions]
    for part in bot_parts:
        part.stop()

    async def bring_back() -> None:
        await asyncio.sleep(10)
        await loop.run_in_executor(None, lambda: [part.start() for part in bot_parts])

    back = asyncio.create_task(bring_back())
    citizens = await run_citizens(cluster, 2)
    await back
    await check_outcome(db, citizens)


async def test_duplicates_across_replicas_are_answered_once(cluster: Cluster, db: AsyncEngine) -> None:
    """The same message id delivered to both replicas at once (a retry racing the original)."""
    async with aiohttp.ClientSession() as http:
        citizen = Citizen(http, cluster.gateway_urls)
        for n, text in enumerate(SCRIPT):
            body = {"sender": citizen.sender, "message": text.format(phone=citizen.phone),
                    "message_id": f"{citizen.sender}-{n}"}

            async def deliver(url: str, body: dict[str, str] = body) -> int:
                async with http.post(f"{url}/webhooks/rest/webhook", json=body) as resp:
                    return resp.status

            assert await asyncio.gather(*(deliver(url) for url in cluster.gateway_urls)) == [200, 200]
            await citizen.say(n, text)  # the page's own retry: the answer the first delivery got
    await check_outcome(db, [citizen])
