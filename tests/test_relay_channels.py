"""An agent talks to WeChat and SMS citizens through the local stand-ins of WeChat's API and of the
Alibaba SMS provider: customer-service messages within the 48-hour window, outside it the order's
phone by SMS and the kept message shown when the citizen next writes; SMS both ways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from gateway.app import OUTBOX
from gateway.botproc import free_port
from gateway.router import RESENT_PREFIX
from handoff import agents
from storage.base import utcnow
from storage.conversations import Conversation, Message
from storage.outbox import OutboxItem
from tests.conftest import gateway_client, router_of, settings_for
from tests.sms_gateway import sms_gateway
from tests.sms_provider_servers import AlibabaServer, alibaba_up
from tests.wechat_api_server import MINI, WeChatAPIServer, WeChatUser, apps_setting, settle

PASSWORD = "correct horse battery"


async def agent_desk(client: TestClient, sender: str, channel: str) -> tuple[dict[str, str], str]:
    """An agent logged in, holding a waiting conversation of this citizen: (headers, its API path)."""
    await agents.add(router_of(client).sessions, "张伟", PASSWORD, "agent")
    resp = await client.post("/console/api/login", json={"name": "张伟", "password": PASSWORD})
    headers = {"X-CSRF-Token": (await resp.json())["csrf"]}
    async with router_of(client).sessions() as session:
        conv = Conversation(channel=channel, sender_id=sender, profile="jiyuan", state="waiting", waiting_since=utcnow())
        session.add(conv)
        await session.commit()
    url = f"/console/api/conversations/{conv.id}"
    assert (await client.post(f"{url}/claim", headers=headers)).status == 200
    return headers, url


async def deliver(client: TestClient) -> None:
    while await client.server.app[OUTBOX].deliver_due():
        pass


@pytest.fixture
async def wechat_gw(tmp_path: Path, wechat_api: WeChatAPIServer) -> AsyncIterator[TestClient]:
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", wechat_apps=apps_setting(),
                            wechat_api_base=wechat_api.url)
    async with gateway_client(settings, background=False) as client:
        yield client


async def test_an_agent_talks_to_a_wechat_citizen_within_and_after_the_48_hour_window(
    wechat_gw: TestClient, wechat_api: WeChatAPIServer
) -> None:
    user = WeChatUser(wechat_gw, wechat_api, MINI)
    wechat_api.user_wrote(MINI.appid, user.openid)  # the citizen wrote lately: the window is open
    headers, url = await agent_desk(wechat_gw, user.openid, "wechat:mini")
    ws = await wechat_gw.ws_connect("/console/ws")
    await deliver(wechat_gw)
    assert wechat_api.to(user.openid) == ["人工客服已接入，请直接说明您的问题。"]  # a customer-service message
    await user.push(user.fields("text", Content="我家门口的路灯不亮了"))
    await settle(wechat_gw)
    frame = await ws.receive_json(timeout=5)
    assert (frame["author"], frame["text"]) == ("citizen", "我家门口的路灯不亮了")
    await wechat_gw.post(f"{url}/messages", json={"text": "请问您的联系电话？"}, headers=headers)
    await deliver(wechat_gw)
    assert wechat_api.to(user.openid)[-1] == "请问您的联系电话？"
    order = {"kind": "help", "facts": {"content": "门口路灯不亮", "place": "宣化街", "phone": "13800001234"}}
    number = (await (await wechat_gw.post(f"{url}/work-order", json=order, headers=headers)).json())["number"]
    await deliver(wechat_gw)
    assert number in wechat_api.to(user.openid)[-1]

    # 48 hours without a citizen message: WeChat refuses (45015). The agent's message goes by SMS to
    # the order's phone and is shown again when the citizen next writes.
    wechat_api.close_window(MINI.appid, user.openid)
    await wechat_gw.post(f"{url}/messages", json={"text": "维修人员明天上午到场。"}, headers=headers)
    for _ in range(100):  # the SMS is queued by the WeChat attempt's fallback: a later pass sends it
        await deliver(wechat_gw)
        async with router_of(wechat_gw).sessions() as session:
            items = list(await session.scalars(select(OutboxItem).order_by(OutboxItem.id)))
        if items[-1].status != "pending":
            break
        await asyncio.sleep(0.05)
    held, sms = items[-2], items[-1]
    assert held.status == "held" and "45015" in (held.last_error or "")
    assert (sms.channel, sms.recipient, sms.status) == ("sms", "13800001234", "sent")
    assert sms.body["text"].endswith("维修人员明天上午到场。")
    assert "维修人员明天上午到场。" not in wechat_api.to(user.openid)
    await user.push(user.fields("text", Content="好的"))  # reopens the window
    for _ in range(100):  # answered in the background, then the kept message leaves through the outbox
        await deliver(wechat_gw)
        if RESENT_PREFIX in wechat_api.to(user.openid)[-1]:
            break
        await asyncio.sleep(0.05)
    assert wechat_api.to(user.openid)[-1] == RESENT_PREFIX + "维修人员明天上午到场。"
    await ws.close()


async def test_an_agent_talks_to_an_sms_citizen(tmp_path: Path) -> None:
    provider = await AlibabaServer().start()
    try:
        async with sms_gateway(tmp_path, provider) as gw:
            headers, url = await agent_desk(gw.client, "13800005555", "sms")
            ws = await gw.client.ws_connect("/console/ws")
            await gw.deliver()
            assert provider.texts("13800005555") == ["热线回复：人工客服已接入，请直接说明您的问题。"]  # the reply template
            assert (await alibaba_up(gw.client, "13800005555", "小区垃圾三天没人清运", 7001))[0] == 200
            frame = await ws.receive_json(timeout=10)
            assert (frame["author"], frame["text"]) == ("citizen", "小区垃圾三天没人清运")
            await gw.client.post(f"{url}/messages", json={"text": "请问是哪个小区？"}, headers=headers)
            await gw.deliver()
            assert provider.texts("13800005555")[-1] == "热线回复：请问是哪个小区？"
            await gw.client.post(f"{url}/release", headers=headers)
            await gw.deliver()
            assert "智能客服继续为您服务" in provider.texts("13800005555")[-1]
            await asyncio.sleep(0)
            await ws.close()
    finally:
        await provider.close()


async def test_an_agents_line_reaches_a_web_page_open_on_another_replica_through_redis(
    tmp_path: Path, redis_url: str
) -> None:
    """The citizen's page is on one replica, the agent's console on the other (no sticky sessions)."""
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", redis_url=redis_url,
                            console_secret="shared-secret")
    async with gateway_client(settings, background=False) as page_side, \
            gateway_client(settings, background=False) as agent_side:
        async with page_side.ws_connect("/ws", params={"sender": "two-replicas"}) as page:
            headers, url = await agent_desk(agent_side, "two-replicas", "web")
            assert (await page.receive_json(timeout=5))["text"] == "人工客服已接入，请直接说明您的问题。"
            await agent_side.post(f"{url}/messages", json={"text": "您好，请讲。"}, headers=headers)
            assert (await page.receive_json(timeout=5))["text"] == "您好，请讲。"
        async with router_of(page_side).sessions() as session:
            statuses = set(await session.scalars(select(Message.status).where(Message.direction == "out")))
        assert statuses == {"delivered"}  # not kept for a later REST answer


async def test_the_console_shows_what_is_left_of_wechats_quota_and_the_gateway_holds_the_sixth(
    wechat_gw: TestClient, wechat_api: WeChatAPIServer
) -> None:
    """5 customer-service messages per citizen message: the console counts them down, and the sixth
    is held for the profile's fallback without asking WeChat (which would answer 45047)."""
    user = WeChatUser(wechat_gw, wechat_api, MINI)
    wechat_api.user_wrote(MINI.appid, user.openid)  # an earlier chat, no longer stored here
    headers, url = await agent_desk(wechat_gw, user.openid, "wechat:mini")
    assert (await (await wechat_gw.get(f"{url}/allowance")).json()) == {"allowance": None}  # nothing to count from
    await deliver(wechat_gw)  # the greeting went before the citizen wrote: it does not count
    await user.push(user.fields("text", Content="我家门口的路灯不亮了"))
    await settle(wechat_gw)
    left = (await (await wechat_gw.get(f"{url}/allowance")).json())["allowance"]
    assert (left["left"], left["after"]) == (5, ["sms", "marker"]) and left["until"]
    for n in range(5):
        sent = await wechat_gw.post(f"{url}/messages", json={"text": f"第{n + 1}条"}, headers=headers)
        assert (await sent.json())["allowance"]["left"] == 4 - n
        await deliver(wechat_gw)
    assert wechat_api.to(user.openid)[-5:] == [f"第{n + 1}条" for n in range(5)]
    attempts = wechat_api.send_attempts
    sixth = await wechat_gw.post(f"{url}/messages", json={"text": "第6条"}, headers=headers)
    assert (await sixth.json())["allowance"]["left"] == 0
    await deliver(wechat_gw)
    assert wechat_api.send_attempts == attempts  # WeChat was not asked
    async with router_of(wechat_gw).sessions() as session:
        held = await session.scalar(select(OutboxItem).order_by(OutboxItem.id.desc()).limit(1))
    assert held is not None and held.status == "held" and "quota" in held.last_error
    await user.push(user.fields("text", Content="好的"))  # a new citizen message: 5 again, the held one resent
    for _ in range(100):
        await deliver(wechat_gw)
        if RESENT_PREFIX + "第6条" in wechat_api.to(user.openid):
            break
        await asyncio.sleep(0.05)
    assert wechat_api.to(user.openid)[-1] == RESENT_PREFIX + "第6条"
    assert (await (await wechat_gw.get(f"{url}/allowance")).json())["allowance"]["left"] == 4
