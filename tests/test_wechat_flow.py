"""Whole WeChat conversations for real: simulated citizens push signed (and encrypted) messages,
the real Rasa bot and action server answer, and the replies arrive as customer-service messages
at the local WeChat API server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from channels.sms.models import SmsRecord
from gateway.router import MEDIA_TEXT, RESENT_PREFIX
from handoff.models import WorkOrder
from storage.conversations import Conversation, Message
from storage.outbox import OutboxItem
from tests.conftest import gateway_client, metrics, router_of, settings_for
from tests.wechat_api_server import (
    MINI,
    MINI_XML,
    OFFICIAL,
    WeChatAPIServer,
    WeChatUser,
    apps_setting,
    settle,
    signed_push,
)

pytestmark = pytest.mark.rasa

COMPLAINT = "昨天晚上十点多，济源市天坛路和济源大道路口的烧烤店噪音太大，吵得根本睡不着，我要投诉"


def wechat_settings(tmp_path: Path, rasa_url: str, api: WeChatAPIServer, **overrides: object):  # noqa: ANN201
    return settings_for(tmp_path, rasa_url, wechat_apps=apps_setting(), wechat_api_base=api.url,
                        outbox_interval_s=0.2, **overrides)


@pytest.fixture
async def gw(tmp_path: Path, rasa_url: str, wechat_api: WeChatAPIServer) -> AsyncIterator[TestClient]:
    async with gateway_client(wechat_settings(tmp_path, rasa_url, wechat_api)) as client:
        yield client


async def work_orders(client: TestClient) -> list[WorkOrder]:
    async with router_of(client).sessions() as session:
        return list((await session.scalars(select(WorkOrder))).all())


async def intake(user: WeChatUser, *, with_photo: bool = False) -> str:
    """The citizen's side of a whole intake, as in test_intake_flow but typed in WeChat."""
    await user.push(user.fields("event", Event="user_enter_tempsession", SessionFrom="hotline"))
    assert "12345" in await user.replies()
    first = await user.say(COMPLAINT)
    assert "投诉" in first and "联系电话" in first and "什么时候" not in first
    if with_photo:
        await user.push(user.fields("image", PicUrl="http://mmbiz.qpic.cn/noise.jpg", MediaId="media-noise"))
        assert await user.replies() == MEDIA_TEXT.format(label="图片")
    assert "称呼" in await user.say("我的手机是 138 0000 1234")
    summary = await user.say("匿名")
    assert "天坛路" in summary and "138****1234" in summary and "13800001234" not in summary
    assert summary.endswith("回复1确认提交，2修改，3取消") and "请点" not in summary  # nothing to tap
    receipt = await user.say("确认提交")  # a button title, typed: the bot gets the button's payload
    number = re.search(r"工单号：(JY\d{14})", receipt)
    assert number, receipt
    assert "7个工作日" in receipt
    return number.group(1)


async def test_mini_program_intake_in_secure_json_mode(gw: TestClient, wechat_api: WeChatAPIServer) -> None:
    user = WeChatUser(gw, wechat_api, MINI)
    number = await intake(user)
    [order] = await work_orders(gw)
    assert (order.number, order.channel, order.category, order.anonymous) == (number, "wechat:mini", "complaint", True)
    assert order.contact_phone == "13800001234" and "天坛路" in order.facts["place"]
    # Every push was acknowledged, every reply went out as a customer-service message, none twice.
    async with router_of(gw).sessions() as session:
        statuses = (await session.scalars(select(OutboxItem.status))).all()
    assert statuses and set(statuses) == {"sent"} and len(statuses) == len(wechat_api.to(user.openid))
    # UTF-8 as WeChat's own SDKs send it, not \uXXXX escapes
    receipt = next(m for m in wechat_api.sent if "工单号" in m.content)
    assert "工单号".encode() in receipt.raw and b"\\u" not in receipt.raw
    m = await metrics(gw)
    assert m[("hotline_outbox_attempts_total", (("channel", "wechat:mini"), ("outcome", "sent")))] == len(statuses)
    assert m[("hotline_turn_seconds_count", (("channel", "wechat:mini"),))] >= 4


async def test_mini_program_intake_in_plaintext_xml_with_a_photo_and_a_held_reply(
    gw: TestClient, wechat_api: WeChatAPIServer
) -> None:
    wechat_api.media["media-noise"] = (b"\xff\xd8 photo of the barbecue at night", "image/jpeg")
    user = WeChatUser(gw, wechat_api, MINI_XML)
    number = await intake(user, with_photo=True)
    [order] = await work_orders(gw)
    assert order.number == number and order.channel == "wechat:minixml"
    photos = [line["attachments"] for line in order.transcript if "attachments" in line]
    assert photos == [[{"type": "image", "media_id": "media-noise", "pic_url": "http://mmbiz.qpic.cn/noise.jpg"}]]
    # The handling unit opens the photo from the work order (fetched while WeChat still had it).
    resp = await gw.get(f"/api/media/{order.channel}/media-noise", headers={"Authorization": "Bearer test-token"})
    assert resp.status == 200 and await resp.read() == wechat_api.media["media-noise"][0]

    # 48 hours later WeChat refuses the reply: it is held, sent by SMS to the order's phone
    # (profile fallback "sms"), and shown again when the citizen next writes ("marker").
    wechat_api.close_window(MINI_XML.appid, user.openid)
    query, body = signed_push(MINI_XML, user.fields("image", PicUrl="http://mmbiz.qpic.cn/2.jpg", MediaId="m2"))
    assert await (await gw.post("/wechat/minixml", params=query, data=body)).text() == "success"
    await settle(gw)
    # The SMS leaves through the same outbox (the embedded log provider): wait for its attempt, which
    # may or may not have begun when the WeChat side settled.
    for _ in range(100):
        async with router_of(gw).sessions() as session:
            items = (await session.scalars(select(OutboxItem).order_by(OutboxItem.id))).all()
            records = (await session.scalars(select(SmsRecord).where(SmsRecord.outbox_id == items[-1].id))).all()
        if items[-1].status not in ("pending", "sending"):
            break
        await asyncio.sleep(0.05)
    held, sms = items[-2], items[-1]
    assert held.status == "held" and "45015" in held.last_error
    assert (sms.channel, sms.recipient, sms.status) == ("sms", "13800001234", "sent")
    assert MEDIA_TEXT.format(label="图片") in sms.body["text"]
    assert records and {(r.provider, r.phone) for r in records} == {("log", "13800001234")}  # reply template parts
    parts = [r.text for r in sorted(records, key=lambda r: r.part)]
    assert all(p.startswith("热线回复：") for p in parts)
    assert "".join(p.removeprefix("热线回复：") for p in parts) == sms.body["text"]
    user.seen = len(wechat_api.to(user.openid))
    reply = await user.say("好的，谢谢")
    assert reply.startswith(RESENT_PREFIX + MEDIA_TEXT.format(label="图片"))


async def test_a_push_retried_three_times_is_answered_once(gw: TestClient, wechat_api: WeChatAPIServer) -> None:
    user = WeChatUser(gw, wechat_api, MINI)
    reply = await user.say("建议在宣化街多设几个垃圾桶，现在走很远都找不到", times=3)
    assert "建议" in reply
    async with router_of(gw).sessions() as session:
        inbound = await session.scalar(select(func.count()).select_from(Message).where(Message.direction == "in"))
        outbound = await session.scalar(select(func.count()).select_from(Message).where(Message.direction == "out"))
    assert inbound == 1 and outbound == len(wechat_api.to(user.openid)) >= 1
    m = await metrics(gw)
    mini = (("channel", "wechat:mini"),)
    assert (m[("hotline_inbound_messages_total", mini)], m[("hotline_duplicate_messages_total", mini)]) == (1, 2)


async def test_two_gateways_sharing_redis_answer_one_push_once(
    tmp_path: Path, rasa_url: str, redis_url: str, wechat_api: WeChatAPIServer
) -> None:
    settings = wechat_settings(tmp_path, rasa_url, wechat_api, redis_url=redis_url)
    async with gateway_client(settings) as a, gateway_client(settings) as b:
        user = WeChatUser(a, wechat_api, MINI)
        fields = user.fields("text", Content="举报黄河大道边上有个废品收购站晚上偷偷焚烧垃圾，味道呛人")
        wechat_api.user_wrote(MINI.appid, user.openid)
        query, body = signed_push(MINI, fields)
        answers = await asyncio.gather(*(c.post("/wechat/mini", params=query, data=body) for c in (a, b, a, b)))
        assert [await r.text() for r in answers] == ["success"] * 4
        await settle(a)
        await settle(b)
        first = wechat_api.to(user.openid)
        assert first and "举报" in "\n".join(first)
        async with router_of(a).sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Conversation)) == 1
            assert await session.scalar(
                select(func.count()).select_from(Message).where(Message.direction == "in")) == 1
        # The next message lands on the other replica: same conversation, same cached access token.
        other = WeChatUser(b, wechat_api, MINI, openid=user.openid)
        other.seen = len(first)
        assert await other.say("13800002222")
        assert len(wechat_api.token_requests) == 1
        client = aioredis.from_url(redis_url)
        try:
            assert await client.get(f"hotline:wechat:token:{MINI.appid}") is not None
        finally:
            await client.aclose()


async def test_several_apps_keep_separate_conversations(gw: TestClient, wechat_api: WeChatAPIServer) -> None:
    mini = WeChatUser(gw, wechat_api, MINI)
    oa = WeChatUser(gw, wechat_api, OFFICIAL, openid=mini.openid)  # openids differ per app in reality
    assert "12345" in await mini.say("你好")
    await oa.push(oa.fields("event", Event="subscribe", EventKey=""))  # following the official account
    assert "12345" in await oa.replies()
    async with router_of(gw).sessions() as session:
        channels = sorted((await session.scalars(select(Conversation.channel))).all())
    assert channels == ["wechat:mini", "wechat:oa"]
