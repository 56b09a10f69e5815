"""A message is either committed and then said to be kept, or refused with "send it again" (503 and
Retry-After) and taken as new when it comes back: never "kept" while nothing was stored."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from common.messages import InboundMessage, NotKept
from gateway.botproc import free_port
from gateway.cluster import RedisServer
from storage.conversations import Message
from tests.conftest import gateway_client, router_of, settings_for

URL = "/webhooks/rest/webhook"


async def inbound_texts(client) -> list[str]:  # noqa: ANN001
    async with router_of(client).sessions() as session:
        return list((await session.scalars(select(Message.text).where(Message.direction == "in"))).all())


@contextlib.contextmanager
def locked(db: Path) -> Iterator[None]:
    """Another process's write transaction on the database file (a long migration, a backup tool)."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def assert_not_kept(status: int, headers, answer: dict) -> None:  # noqa: ANN001
    assert status == 503
    assert headers["Retry-After"].isdigit()
    assert "未能保存" in answer["error"] and "kept" not in answer["error"]


@pytest.fixture
def locked_db_settings(tmp_path: Path):  # noqa: ANN201
    """An offline bot and a SQLite writer that gives up after half a second instead of 30."""
    db = tmp_path / "hotline.db"
    return db, settings_for(tmp_path, f"http://127.0.0.1:{free_port()}",
                            database_url=f"sqlite+aiosqlite:///{db}?timeout=0.5")


async def test_locked_database_says_not_kept_and_the_retry_is_taken(locked_db_settings, caplog) -> None:
    db, settings = locked_db_settings
    async with gateway_client(settings) as client:
        body = {"sender": "lock-13800001234", "message": "楼下烧烤店油烟太大", "message_id": "m-1"}
        with locked(db), caplog.at_level(logging.WARNING):
            resp = await client.post(URL, json=body)
            assert_not_kept(resp.status, resp.headers, await resp.json())
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "message not kept on web (OperationalError" in logged
        assert "13800001234" not in logged and "烧烤" not in logged
        assert await inbound_texts(client) == []
        resp = await client.post(URL, json=body)  # the provider's (or page's) retry
        assert resp.status == 200
        assert "已保存" in (await resp.json())[0]["text"]
        assert await inbound_texts(client) == ["楼下烧烤店油烟太大"]


async def test_locked_database_over_websocket_gets_an_error_frame(locked_db_settings) -> None:
    db, settings = locked_db_settings
    async with gateway_client(settings) as client:
        ws = await client.ws_connect("/ws?sender=lock-ws")
        with locked(db):
            await ws.send_json({"text": "路灯不亮", "message_id": "w-1"})
            frame = await asyncio.wait_for(ws.receive_json(), 10)
        assert frame["type"] == "error" and "未能保存" in frame["error"] and frame["message_id"] == "w-1"
        await ws.send_json({"text": "路灯不亮", "message_id": "w-1"})
        frames = [await asyncio.wait_for(ws.receive_json(), 10) for _ in range(2)]
        assert [f["type"] for f in frames] == ["reply", "done"]
        assert await inbound_texts(client) == ["路灯不亮"]
        await ws.close()


async def test_accepted_message_on_a_locked_database_is_not_kept_and_retry_is_taken(locked_db_settings) -> None:
    """The acknowledge-at-once path (WeChat, SMS): the channel's caller gets NotKept, not a conversation."""
    db, settings = locked_db_settings
    async with gateway_client(settings) as client:
        router = router_of(client)
        msg = InboundMessage("wechat", "openid-lock", "井盖丢了", message_id="wx-1")
        with locked(db), pytest.raises(NotKept):
            await router.accept(msg)
        assert await router.accept(msg) is not None
        assert await router.accept(msg) is None  # now it is a duplicate
        assert await inbound_texts(client) == ["井盖丢了"]


async def test_redis_stopped_mid_conversation_says_not_kept_and_the_retry_is_taken(tmp_path: Path) -> None:
    redis = RedisServer()
    redis.start()
    try:
        settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", redis_url=redis.url)
        async with gateway_client(settings) as client:
            sender = f"redis-{uuid.uuid4().hex[:6]}"
            first = {"sender": sender, "message": "小区停水三天了", "message_id": "r-1"}
            assert (await client.post(URL, json=first)).status == 200
            redis.stop()
            second = {"sender": sender, "message": "还没来水", "message_id": "r-2"}
            resp = await client.post(URL, json=second)
            assert_not_kept(resp.status, resp.headers, await resp.json())
            assert await inbound_texts(client) == ["小区停水三天了"]
            redis.start()
            resp = await client.post(URL, json=second)
            assert resp.status == 200 and "已保存" in (await resp.json())[0]["text"]
            assert (await client.post(URL, json=first)).status == 200  # a late retry of the first: not kept twice
            assert await inbound_texts(client) == ["小区停水三天了", "还没来水"]
    finally:
        redis.stop()
