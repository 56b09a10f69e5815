"""SMS callbacks in each provider's shape, the log provider, SMS intake, and the work-order event API
with its HMAC-signed callback."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from channels.sms.models import SmsRecord
from gateway.events_api import signature
from storage.conversations import Conversation, Message
from storage.inbox import InboxKey
from storage.outbox import OutboxItem
from tests.sms_gateway import SmsGateway, sms_gateway
from tests.sms_provider_servers import AlibabaServer, TencentServer, alibaba_up, tencent_reply, tencent_status

PHONE = "13800001234"


@pytest.fixture
async def tencent_gw(tmp_path: Path) -> AsyncIterator[tuple[SmsGateway, TencentServer]]:
    server = await TencentServer().start()
    async with sms_gateway(tmp_path, server, kind="tencent", sms_template_reply="100001",
                           sms_template_survey="100002") as gw:
        yield gw, server
    await server.close()


@pytest.fixture
async def ali_gw(tmp_path: Path) -> AsyncIterator[tuple[SmsGateway, AlibabaServer]]:
    server = await AlibabaServer().start()
    async with sms_gateway(tmp_path, server, sms_callback_token="s3cret") as gw:
        yield gw, server
    await server.close()


async def test_tencent_survey_reply_and_status_callbacks(tencent_gw: tuple[SmsGateway, TencentServer]) -> None:
    gw, server = tencent_gw
    order = await gw.order()
    assert order.number
    await gw.replied(order.number)
    await gw.tick()
    [survey_sms] = server.sent
    assert survey_sms.template == "100002" and f"尾号{order.number[-4:]}" in survey_sms.text
    assert await tencent_status(gw.client, survey_sms) == (200, {"result": 0, "errmsg": "OK"})
    assert (await gw.records())[0].delivery == "delivered"
    at = int(time.time())
    for _ in range(2):  # pushed twice: recorded once
        assert await tencent_reply(gw.client, PHONE, "非常满意", at) == (200, {"result": 0, "errmsg": "OK"})
    await gw.deliver()
    survey = await gw.survey(order.number)
    assert (survey.rating, len(survey.history)) == ("very_satisfied", 1)
    assert "已记录：非常满意" in server.sent[-1].text and len(server.sent) == 2


async def test_callbacks_check_token_shape_and_size(ali_gw: tuple[SmsGateway, AlibabaServer]) -> None:
    gw, _ = ali_gw
    body = [{"phone_number": PHONE, "content": "1", "send_time": "2026-12-01 10:00:00", "sequence_id": 1}]
    assert (await gw.client.post("/sms/alibaba/up", json=body)).status == 403
    assert (await gw.client.post("/sms/alibaba/up?token=wrong", json=body)).status == 403
    resp = await gw.client.post("/sms/alibaba/up?token=s3cret", data=b"{not json")
    assert resp.status == 400 and "JSON" in (await resp.json())["error"]
    resp = await gw.client.post("/sms/alibaba/up?token=s3cret", json=[{"phone_number": PHONE}])
    assert resp.status == 400 and "content" in (await resp.json())["error"]
    resp = await gw.client.post("/sms/alibaba/report?token=s3cret", json=[{"biz_id": "1", "success": "yes"}])
    assert resp.status == 400
    resp = await gw.client.post("/sms/alibaba/up?token=s3cret", data=b"[" + b" " * 70000 + b"]")
    assert resp.status == 413
    assert await alibaba_up(gw.client, PHONE, "1", "seq-1", token="s3cret") == (200, {"code": 0, "msg": "成功"})
    # sequence_id as a number (older docs) or a string: both accepted; a report for an unknown SMS is kept
    resp = await gw.client.post("/sms/alibaba/report?token=s3cret", json=[
        {"phone_number": PHONE, "success": True, "err_code": "DELIVERED", "biz_id": "999^0"}])
    assert resp.status == 200


async def test_callbacks_refuse_deep_json_and_lone_surrogates(ali_gw: tuple[SmsGateway, AlibabaServer]) -> None:
    """#14: these gave 503 (a provider retries a 503 for ever); they are the sender's error."""
    gw, _ = ali_gw
    up = '[{"phone_number": "%s", "content": "\\ud800路灯坏了", "send_time": "2026-12-01 10:00:00", "sequence_id": 9}]'
    for raw, error in ((b"[" * 5_000 + b"]" * 5_000, "nested too deeply"),
                       ((up % PHONE).encode(), "lone surrogate")):
        resp = await gw.client.post("/sms/alibaba/up?token=s3cret", data=raw)
        assert resp.status == 400 and error in (await resp.json())["error"]
        order = await gw.order()
        resp = await gw.client.post(f"/api/tickets/{order.number}/events", data=raw.replace(b"phone_number", b"note"),
                                    headers={"Authorization": "Bearer test-token"})
        assert resp.status == 400, await resp.text()
    async with gw.surveys.sessions() as session:
        assert (await session.scalars(select(Message).where(Message.direction == "in"))).all() == []


async def test_callbacks_without_a_configured_token_take_nothing(tmp_path: Path) -> None:
    """#14: with no token set, a forged SmsUp answered a survey and closed the order. Now nothing is taken."""
    server = await AlibabaServer().start()
    try:
        async with sms_gateway(tmp_path, server, sms_callback_token="") as gw:
            order = await gw.order(PHONE)
            await gw.replied(order.number or "")
            await gw.tick()
            for token in ("", "anything"):
                status, body = await alibaba_up(gw.client, PHONE, "1", f"forged-{token}", token=token)
                assert status == 503 and "HOTLINE_SMS_CALLBACK_TOKEN" in body["error"]
            assert (await gw.survey(order.number or "")).rating is None
            async with gw.surveys.sessions() as session:
                assert (await session.scalars(select(Message).where(Message.direction == "in"))).all() == []
    finally:
        await server.close()


async def test_sms_intake_goes_to_the_bot_and_answers_by_sms(
    ali_gw: tuple[SmsGateway, AlibabaServer], caplog: pytest.LogCaptureFixture
) -> None:
    gw, server = ali_gw
    caplog.set_level(logging.INFO)
    text = "我家楼下的路灯坏了一个星期了，晚上很黑，电话13800001234"
    assert await alibaba_up(gw.client, "+86" + PHONE, text, 501, token="s3cret") == (200, {"code": 0, "msg": "成功"})
    assert await alibaba_up(gw.client, PHONE, text, 501, token="s3cret") == (200, {"code": 0, "msg": "成功"})
    await gw.settle()  # the bot is offline here: the apology is the reply, the message kept for the retry
    async with gw.surveys.sessions() as session:
        conv = await session.scalar(select(Conversation).where(Conversation.channel == "sms"))
        assert conv is not None and conv.sender_id == PHONE
        inbound = (await session.scalars(select(Message).where(Message.direction == "in"))).all()
        assert [m.text for m in inbound] == [text] and inbound[0].status == "pending_bot"
    assert server.sent and "智能客服暂时繁忙" in server.last() and server.sent[-1].template == "SMS_100001"
    assert all(len(s.text) + len("【济源12345】") <= 70 for s in server.sent)
    # Our records only: the stand-in provider's own access log shows the SendSms query (PhoneNumbers=…).
    logged = "\n".join(r.getMessage() for r in caplog.records if "PhoneNumbers=" not in r.getMessage())
    assert "/sms/alibaba/up" in logged
    assert not re.search(r"1[3-9]\d{9}", logged), "a phone number reached the log"


async def test_log_provider_records_and_prints_masked(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    server = await AlibabaServer().start()  # not used by the log provider; only its URL is passed
    async with sms_gateway(tmp_path, server, kind="log") as gw:
        order = await gw.order()
        assert order.number
        await gw.replied(order.number)
        await gw.tick()
        [record] = await gw.records()
        assert (record.provider, record.phone, record.delivery) == ("log", PHONE, "sent")
        assert f"尾号{order.number[-4:]}" in record.text and (await gw.survey(order.number)).status == "open"
    await server.close()
    err = capfd.readouterr().err
    assert "138****1234" in err and "【济源12345】您的工单尾号" in err and PHONE not in err
    assert server.sent == []


async def test_reply_sender_handles_plain_text_bodies_and_splits_long_ones(
    ali_gw: tuple[SmsGateway, AlibabaServer]
) -> None:
    """The WeChat channel falls back to SMS with plain {"text": …} bodies."""
    gw, server = ali_gw
    long = "您反映的问题已转交承办单位。" + "承办单位将尽快联系您并上门查看现场情况，请保持电话畅通。" * 3
    async with gw.surveys.sessions() as session:
        from storage.outbox import enqueue

        enqueue(session, channel="sms", recipient="+86" + PHONE, body={"text": long}, dedupe_key="wechat-fallback:1",
                not_before=gw.clock())
        enqueue(session, channel="sms", recipient="not-a-phone", body={"text": "x"}, dedupe_key="wechat-fallback:2",
                not_before=gw.clock())
        await session.commit()
    await gw.deliver()
    parts = [s.text for s in server.sent]  # the reply template (热线回复：) around each piece, ≤ 35 (Alibaba)
    assert server.texts() == ["热线回复：" + long] and len(parts) > 1
    assert all(len(s.text) + len("【济源12345】") <= 70 and len(s.values["text"]) <= 35 for s in server.sent)
    async with gw.surveys.sessions() as session:
        statuses = dict((await session.execute(select(OutboxItem.dedupe_key, OutboxItem.status))).all())
        records = await session.scalar(select(func.count(SmsRecord.id)))
    assert statuses == {"wechat-fallback:1": "sent", "wechat-fallback:2": "failed"}
    assert records == len(parts)
    assert [r.reason for r in await gw.revisits()] == ["sms_failed"]


async def test_a_retry_resumes_after_the_last_accepted_segment(ali_gw: tuple[SmsGateway, AlibabaServer]) -> None:
    gw, server = ali_gw
    text = "第一句话说明情况，内容比较长需要拆开发送才能放得下。" * 2 + "第二部分在服务中断之后才发出，请注意查收。"
    server.down_on_calls = {2}  # the second segment meets an outage once
    async with gw.surveys.sessions() as session:
        from storage.outbox import enqueue

        enqueue(session, channel="sms", recipient=PHONE, body={"text": text}, dedupe_key="k", not_before=gw.clock())
        await session.commit()
    await gw.deliver()
    assert len(server.sent) == 1
    gw.clock.advance(minutes=5)
    await gw.deliver()
    assert "".join(s.values["text"] for s in server.sent) == text  # no segment twice


async def test_work_order_events_api(ali_gw: tuple[SmsGateway, AlibabaServer]) -> None:
    gw, _ = ali_gw
    order = await gw.order()
    number = order.number
    assert number
    url = f"/api/tickets/{number}/events"
    assert (await gw.client.post(url, json={"event": "signed"})).status == 401
    resp = await gw.client.post(url, json={"event": "signed"}, headers={"Authorization": "Bearer test-token"})
    refusal = await resp.json()
    assert resp.status == 409 and "cannot follow created" in refusal["error"]
    assert refusal["allowed"]["signed"] == ["dispatched", "reopened"]  # the transition table, as in docs/operations.md
    assert set(refusal["allowed"]) == {"dispatched", "signed", "extended", "returned", "replied", "closed"}
    await gw.event(number, "nonsense", status=400)
    await gw.event(number, "dispatched", status=400, colour="red")
    await gw.event(number, "dispatched", event_id="e-1")
    assert (await gw.event(number, "dispatched", event_id="e-1"))["applied"] is False  # a repeat, not a 409
    await gw.event(number, "signed")
    before = (await gw.work_order(number)).due_at
    await gw.event(number, "extended", status=409)  # days missing
    body = await gw.event(number, "extended", days=3, note="需协调多个部门")
    assert (await gw.work_order(number)).due_at > before and body["order"]["limit_working_days"] == 10
    await gw.event(number, "replied", status=409)  # an answer is required
    body = await gw.event(number, "replied", answer="已协调修复")
    assert body["order"]["contact"]["phone"] == "138****1234"  # the handling unit's view is masked
    assert [h["status"] for h in body["order"]["history"]] == ["created", "dispatched", "signed", "extended", "replied"]
    assert (await gw.client.post("/api/tickets/JY0/events", json={"event": "signed"},
                                 headers={"Authorization": "Bearer test-token"})).status == 404
    resp = await gw.client.get(f"/api/tickets/{number}/survey", headers={"Authorization": "Bearer test-token"})
    surveys = (await resp.json())["surveys"]
    assert [(s["round"], s["status"]) for s in surveys] == [(1, "scheduled")]
    assert "13800001234" not in json.dumps(surveys)


async def test_signed_ticket_callback(ali_gw: tuple[SmsGateway, AlibabaServer]) -> None:
    gw, server = ali_gw
    order = await gw.order()
    number = order.number
    assert number

    async def post(payload: dict[str, object], *, secret: str = "callback-secret", ts: int | None = None) -> tuple:
        raw = json.dumps(payload, ensure_ascii=False).encode()
        stamp = str(ts if ts is not None else int(time.time()))
        resp = await gw.client.post("/callbacks/tickets/events", data=raw, headers={
            "Content-Type": "application/json", "X-Hotline-Timestamp": stamp,
            "X-Hotline-Signature": signature(secret, stamp, raw)})
        return resp.status, await resp.json()

    assert (await post({"number": number, "event": "dispatched", "event_id": "x1"}))[0] == 200
    status, body = await post({"number": number, "event": "signed", "event_id": "x2"}, secret="guess")
    assert status == 401 and body["error"] == "bad signature"
    assert (await post({"number": number, "event": "signed", "event_id": "x2"}, ts=int(time.time()) - 3600))[0] == 401
    assert (await post({"number": number, "event": "signed"}))[0] == 400  # event_id required on callbacks
    assert (await post({"number": number, "event": "signed", "event_id": "x2"}))[0] == 200
    status, body = await post({"number": number, "event": "signed", "event_id": "x2"})  # a replay
    assert status == 200 and body["applied"] is False
    status, body = await post({"number": number, "event": "replied", "event_id": "x3", "answer": "已处理完毕"})
    assert status == 200 and body["order"]["status"] == "replied"
    await gw.tick()
    assert f"尾号{number[-4:]}" in server.sent[-1].text  # replied by callback schedules the survey too
    async with gw.surveys.sessions() as session:
        keys = await session.scalar(select(func.count(InboxKey.id)).where(InboxKey.source == "ticket:callback"))
    assert keys == 3


def test_the_readme_transition_table_is_the_one_the_api_enforces() -> None:
    from gateway.config import ROOT
    from handoff.lifecycle import ALLOWED, PUBLIC_EVENTS

    rows = dict(re.findall(r"^\| `(\w+)` \| (`.+`) \|$", (ROOT / "docs" / "operations.md").read_text(encoding="utf-8"), re.M))
    assert {e: re.findall(r"`(\w+)`", rows[e]) for e in PUBLIC_EVENTS} == {e: list(ALLOWED[e]) for e in PUBLIC_EVENTS}
