"""Bad input gets a clear 4xx or a clear reply, never a 500, and nothing a citizen wrote is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select

from gateway.botproc import free_port
from gateway.cluster import RedisServer
from gateway.coordination import LocalCoordinator, RedisCoordinator
from storage.conversations import Message
from tests.conftest import Chat, gateway_client, router_of, settings_for

URL = "/webhooks/rest/webhook"


async def stored_inbound(client) -> list[Message]:  # noqa: ANN001
    async with router_of(client).sessions() as session:
        return list((await session.scalars(select(Message).where(Message.direction == "in"))).all())


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "not valid UTF-8 JSON"),
        (b"\xff\xfe", 400, "not valid UTF-8 JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"sender": "a", "message": "hi", "colour": "red"}', 400, "unknown fields: colour"),
        (b'{"message": "hi"}', 400, "sender"),
        (b'{"sender": "a b<script>", "message": "hi"}', 400, "sender"),
        (b'{"sender": "a", "message": 5}', 400, "message must be a string"),
        (b'{"sender": "a", "message": "x", "metadata": []}', 400, "metadata"),
        (b"[" * 30_000 + b"]" * 30_000, 400, "nested too deeply"),
        (b'{"sender": "a", "message": "\\ud800 \xe8\xb7\xaf\xe7\x81\xaf"}', 400, "lone surrogate"),
        (b'{"sender": "a", "message": "hi", "message_id": "\\udfff"}', 400, "lone surrogate"),
    ],
)
async def test_malformed_requests(offline_gateway, body: bytes, status: int, error: str) -> None:
    resp = await offline_gateway.post(URL, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == status
    assert error in (await resp.json())["error"]
    assert await stored_inbound(offline_gateway) == []


async def test_body_over_the_limit_is_refused_unread(offline_gateway) -> None:
    resp = await offline_gateway.post(URL, data=b'{"sender":"a","message":"' + b"x" * 70_000 + b'"}')
    assert resp.status == 413
    assert await stored_inbound(offline_gateway) == []


async def raw_post(client, head: bytes, parts: list[bytes], pause: float = 0.3) -> tuple[int, bytes]:  # noqa: ANN001
    """POST over a raw socket, the body written in `parts` with a pause between: TCP as it arrives."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head)
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
        response = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def chunked(pieces: list[bytes]) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]


async def test_body_split_over_two_writes_is_read_whole(offline_gateway) -> None:
    body = json.dumps({"sender": "split", "message": "小区路灯坏了", "message_id": "split-1"}).encode()
    head = (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (URL.encode(), len(body)))
    status, answer = await raw_post(offline_gateway, head, [body[:20], body[20:]])
    assert status == 200, answer
    assert [r.text for r in await stored_inbound(offline_gateway)] == ["小区路灯坏了"]


async def test_chunked_body_in_pieces_is_read_whole(offline_gateway) -> None:
    body = json.dumps({"sender": "chunks", "message": "噪音扰民", "message_id": "chunks-1"}).encode()
    head = (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" % URL.encode())
    status, answer = await raw_post(offline_gateway, head, chunked([body[:15], body[15:]]))
    assert status == 200, answer
    assert [r.text for r in await stored_inbound(offline_gateway)] == ["噪音扰民"]


async def test_chunked_body_over_the_limit_gets_413(offline_gateway) -> None:
    """10 MB chunked (no Content-Length to refuse up front) is refused as too large, not as bad JSON."""
    piece = b"x" * (256 * 1024)
    body = [b'{"sender":"big","message":"'] + [piece] * 40 + [b'"}']
    head = (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" % URL.encode())
    status, answer = await raw_post(offline_gateway, head, chunked(body), pause=0.01)
    assert status == 413, answer
    assert await stored_inbound(offline_gateway) == []


async def test_websocket_refuses_bad_frames_and_goes_on(offline_gateway) -> None:
    ws = await offline_gateway.ws_connect("/ws?sender=ws-edge")
    for frame, error in [
        ("[" * 30_000 + "]" * 30_000, "nested too deeply"),
        ('{"text": "\\ud800"}', "lone surrogate"),
        (json.dumps({"text": "hi", "message_id": "x" * 129}), "1-128"),
    ]:
        await ws.send_str(frame)
        answer = await asyncio.wait_for(ws.receive_json(), 10)
        assert answer["type"] == "error" and error in answer["error"]
    await ws.send_json({"text": "小区停水了", "message_id": "edge-1"})
    answer = await asyncio.wait_for(ws.receive_json(), 10)
    assert answer["type"] == "reply" and "已保存" in answer["text"]
    await ws.close()
    assert [r.text for r in await stored_inbound(offline_gateway)] == ["小区停水了"]


async def test_empty_message_gets_a_prompt(offline_gateway) -> None:
    replies = await Chat(offline_gateway, "empty").say("   ")
    assert "请输入" in Chat.text(replies)


@pytest.mark.parametrize(
    "text",
    ["路" * 10_000, "😀🙏🔥" * 5, "<script>alert(1)</script>小区停水了", "\u0000\u200b测试"],
)
async def test_odd_text_is_kept_and_answered_while_bot_is_down(offline_gateway, text: str) -> None:
    replies = await Chat(offline_gateway, f"odd-{uuid.uuid4().hex[:6]}").say(text)
    assert "已保存" in Chat.text(replies)
    rows = await stored_inbound(offline_gateway)
    assert [r.text for r in rows] == [text.strip()] and rows[0].status == "pending_bot"


class ToggleProxy:
    """A loopback HTTP proxy in front of the real Rasa server that can be switched off (an outage)."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.up = upstream, False
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.up:
            return web.Response(status=502, text="bot down")
        async with aiohttp.ClientSession() as http, http.request(
            request.method, f"{self.upstream}{request.rel_url}", data=await request.read(),
            headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
        ) as resp:
            return web.Response(status=resp.status, body=await resp.read(), content_type=resp.content_type)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}"


@pytest.mark.rasa
async def test_bot_outage_keeps_messages_and_answers_when_back(tmp_path, rasa_url) -> None:
    proxy = ToggleProxy(rasa_url)
    url = await proxy.start()
    try:
        async with gateway_client(settings_for(tmp_path, url)) as client:
            chat = Chat(client, f"outage-{uuid.uuid4().hex[:6]}")
            down = Chat.text(await chat.say("举报天坛路有个黑诊所无证行医，最近一个月好多老人去打针"))
            assert "已保存" in down
            assert "已保存" in Chat.text(await chat.say("13800007777"))  # queued behind the first
            router = router_of(client)
            assert await router.retry_pending() == 0  # still down: nothing sent, nothing lost

            proxy.up = True
            assert await router.retry_pending() == 2
            rows = await stored_inbound(client)
            assert [r.status for r in rows] == ["done", "done"]
            # The answers produced meanwhile arrive with the citizen's next turn, in order.
            text = Chat.text(await chat.say("匿名"))
            assert text.index("举报") < text.index("称呼") < text.index("请核对")
    finally:
        assert proxy.runner is not None
        await proxy.runner.cleanup()


async def test_in_process_dedupe_stays_fast_with_many_ids() -> None:
    """100,000 live ids: each claim costs about what the first did (no sweep of all of them)."""
    coordinator = LocalCoordinator()
    for i in range(100_000):
        assert await coordinator.claim(f"web:s:{i}", 3600)
    started = time.perf_counter()
    for i in range(100_000, 102_000):
        assert await coordinator.claim(f"web:s:{i}", 3600)
    assert time.perf_counter() - started < 1.0  # a sweep per claim: ~6 ms each, 12 s here
    assert not await coordinator.claim("web:s:5", 3600) and await coordinator.seen("web:s:5")


async def test_in_process_claims_expire() -> None:
    coordinator = LocalCoordinator()
    assert await coordinator.claim("short", 0) and await coordinator.claim("long", 3600)
    assert await coordinator.claim("short", 3600)  # expired: taken again
    assert not await coordinator.claim("long", 3600)
    # Mixed lifetimes: ids of a short TTL leave memory as they expire, the long ones stay.
    for i in range(1000):
        await coordinator.claim(f"brief:{i}", 0)
    await coordinator.claim("after", 3600)
    assert len(coordinator._claims) == 3 and not await coordinator.seen("brief:999")
    assert await coordinator.claim_value("nonce", "a", 3600) == "a"
    assert await coordinator.claim_value("nonce", "b", 3600) == "a"


async def test_redis_coordination_across_replicas(redis_url) -> None:
    """Two replicas sharing Redis: a message id is claimed once; a conversation lock excludes the other."""
    a, b = RedisCoordinator(redis_url), RedisCoordinator(redis_url)
    key = f"web:s:{uuid.uuid4().hex}"
    try:
        assert await a.claim(key, 60) is True
        assert await b.claim(key, 60) is False
        # A nonce taken with one body: every replica reads back the first body's digest.
        assert await a.claim_value(f"{key}:nonce", "body-1", 60) == "body-1"
        assert await b.claim_value(f"{key}:nonce", "body-2", 60) == "body-1"
        assert await b.claim_value(f"{key}:nonce", "body-1", 60) == "body-1"
        order: list[str] = []
        async with a.lock("conv:x", timeout_s=5):
            import asyncio

            async def other() -> None:
                async with b.lock("conv:x", timeout_s=5):
                    order.append("b")

            task = asyncio.create_task(other())
            await asyncio.sleep(0.2)
            order.append("a")
        await task
        assert order == ["a", "b"]
    finally:
        await a.close()
        await b.close()


@pytest.mark.rasa
async def test_two_gateways_sharing_redis_process_a_retry_once(tmp_path, rasa_url, redis_url) -> None:
    settings = settings_for(tmp_path, rasa_url, redis_url=redis_url)
    async with gateway_client(settings) as one, gateway_client(settings) as two:
        body = {"sender": f"r-{uuid.uuid4().hex[:6]}", "message": "建议公交站台加个遮雨棚", "message_id": "m1"}
        r1 = await (await one.post(URL, json=body)).json()
        r2 = await (await two.post(URL, json=body)).json()
        assert r1 == r2 and r1
        assert len(await stored_inbound(one)) == 1


async def test_websocket_opens_only_from_allowed_origins(tmp_path) -> None:  # noqa: ANN001
    """#14: /ws accepted any Origin, so any site could talk to the chat as a citizen's browser."""
    settings = settings_for(tmp_path, "http://127.0.0.1:9", web_origins="https://12345.example.gov.cn")
    async with gateway_client(settings, background=False) as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws?sender=o1", headers={"Origin": "https://evil.example"})
        assert refused.value.status == 403
        own = f"http://{client.server.host}:{client.server.port}"
        for origin in (own, "https://12345.example.gov.cn"):
            ws = await client.ws_connect("/ws?sender=o1", headers={"Origin": origin})
            await ws.close()


async def fresh_window(window_s: int = 60, margin_s: float = 15.0) -> None:
    """Rate limits count in fixed wall-clock windows: start near a window's start, so one test's
    hits all fall in the same window."""
    left = window_s - time.time() % window_s
    if left < margin_s:
        await asyncio.sleep(left + 0.05)


async def test_rotating_sender_ids_do_not_get_around_the_address_limit(tmp_path) -> None:  # noqa: ANN001
    settings = settings_for(tmp_path, "http://127.0.0.1:9", web_address_per_minute=3)
    await fresh_window()
    async with gateway_client(settings, background=False) as client:
        statuses = []
        for i in range(4):
            resp = await client.post(URL, json={"sender": f"rot-{i}", "message": f"第{i}条", "message_id": f"m{i}"})
            statuses.append(resp.status)
        assert statuses == [200, 200, 200, 429] and resp.headers["Retry-After"] == "60"
        assert "没有保存" in (await resp.json())["error"]
        assert sorted(m.text for m in await stored_inbound(client)) == ["第0条", "第1条", "第2条"]
        ws = await client.ws_connect("/ws?sender=rot-ws")
        await ws.send_json({"text": "第4条", "message_id": "m4"})
        answer = await asyncio.wait_for(ws.receive_json(), 10)
        assert answer["type"] == "error" and answer["retry_after"] == 60
        await ws.close()


async def test_the_address_limit_holds_across_replicas_sharing_redis(tmp_path) -> None:  # noqa: ANN001
    """#14: each replica counted an address on its own, so behind a balancer a client rotating
    sender ids got the limit once per replica. With Redis the replicas share one count. A Redis of
    its own: the suite's shared one holds other tests' counts for 127.0.0.1 in the same minute."""
    server = RedisServer()
    server.start()
    settings = settings_for(tmp_path, "http://127.0.0.1:9", redis_url=server.url, web_address_per_minute=4)
    await fresh_window()
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(server.stop)
        one = await stack.enter_async_context(gateway_client(settings, background=False))
        two = await stack.enter_async_context(gateway_client(settings, background=False))
        tag = uuid.uuid4().hex[:6]
        statuses = []
        for i in range(8):  # the balancer alternates replicas; the client a new sender id each time
            replica = (one, two)[i % 2]
            resp = await replica.post(URL, json={"sender": f"rot-{tag}-{i}", "message": f"第{i}条"})
            statuses.append(resp.status)
        assert statuses == [200] * 4 + [429] * 4
        assert sorted(m.text for m in await stored_inbound(one)) == ["第0条", "第1条", "第2条", "第3条"]


async def test_the_address_limit_lets_messages_through_when_redis_is_down(tmp_path, caplog) -> None:  # noqa: ANN001
    """A limiter never costs a citizen's message: with Redis unreachable, the count is skipped and logged."""
    dead = RedisCoordinator(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert [await dead.allow("web-address:10.0.0.1", 1, 60) for _ in range(3)] == [True] * 3
    finally:
        await dead.close()
    assert "rate limit not counted (let through): redis ConnectionError" in caplog.text


async def test_a_redis_outage_never_turns_into_a_429(tmp_path, bot, caplog) -> None:  # noqa: ANN001
    """Redis stops under a running gateway: the limit is not counted (logged), so no citizen hears
    "too fast" for it; whether the message is kept is the conversation lock's truthful answer."""
    server = RedisServer()
    server.start()
    settings = settings_for(tmp_path, bot[1], redis_url=server.url, web_address_per_minute=2)
    try:
        async with gateway_client(settings, background=False) as client:
            server.stop()
            statuses = [(await client.post(URL, json={"sender": f"down-{i}", "message": "路灯坏了"})).status
                        for i in range(4)]
    finally:
        server.stop()
    assert 429 not in statuses and set(statuses) <= {200, 503}
    assert caplog.text.count("rate limit not counted (let through): redis ConnectionError") == 4


async def test_the_local_address_limit_counts_fixed_windows() -> None:
    coordinator = LocalCoordinator()
    await fresh_window(1, 0.5)
    assert [await coordinator.allow("a", 2, 1) for _ in range(3)] == [True, True, False]
    assert await coordinator.allow("b", 2, 1) is True
    await asyncio.sleep(1.0)
    assert await coordinator.allow("a", 2, 1) is True  # a new window


async def test_a_flooding_sender_is_limited_across_replicas(tmp_path, bot, redis_url) -> None:  # noqa: ANN001
    """The per-sender flood limit counts the sender's kept messages in the shared database, so a
    sender spread over two replicas meets it at the profile's total, not at twice it."""
    settings = settings_for(tmp_path, bot[1], redis_url=redis_url)
    async with gateway_client(settings, background=False) as one, gateway_client(settings, background=False) as two:
        rules = router_of(one).profile.abuse
        replies = []
        for i in range(rules.flood_messages + 2):
            resp = await (one, two)[i % 2].post(URL, json={"sender": "flood-1", "message": f"路灯坏了{i}"})
            replies.append(Chat.text(await resp.json()))
        limited = rules.message.format(hours=f"{rules.limit_hours:g}")
        assert [limited in r for r in replies] == [False] * rules.flood_messages + [True] * 2
