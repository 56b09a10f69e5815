"""The survey through the gateway: `replied` → survey SMS at the local provider → the citizen's SMS
reply (or silence) → rating, default, redo, expert review; time is a controlled clock."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.app import SETTINGS
from gateway.config import ROOT
from handoff.deadlines import due_date
from handoff.lifecycle import aware
from handoff.models import SmsOptOut, Survey, WorkOrderEvent
from handoff.survey import with_survey
from profiles import load
from storage.conversations import Conversation, Message
from storage.inbox import InboxKey
from storage.outbox import enqueue
from tests.sms_gateway import (
    BEFORE_NATIONAL_DAY,
    BEFORE_SPRING_FESTIVAL,
    MAKE_UP_SATURDAY,
    TZ,
    Clock,
    SmsGateway,
    morning,
    sms_gateway,
)
from tests.sms_provider_servers import KEY_ID, KEY_SECRET, AlibabaServer, alibaba_report, alibaba_up

PHONE = "13800001234"
OK = {"code": 0, "msg": "成功"}

JIYUAN = load("jiyuan")
GUILIN = with_survey(JIYUAN, article="第十四条(二)", default_rating="satisfied", window_hours=24.0)
HAOJIANG = with_survey(JIYUAN, article="四(五)", redo_extra_working_days=None, max_redos=1, allow_correction=True,
                       after_last_redo="revisit", send_within_working_days=1)
ZHIJIANG = with_survey(JIYUAN, article="第二十条", max_redos=1, after_last_redo="expert_review")


@pytest.fixture
async def provider() -> AsyncIterator[AlibabaServer]:
    server = await AlibabaServer().start()
    yield server
    await server.close()


@pytest.fixture
async def gw(tmp_path: Path, provider: AlibabaServer) -> AsyncIterator[SmsGateway]:
    async with sms_gateway(tmp_path, provider) as gateway:
        yield gateway


async def replied_and_surveyed(gw: SmsGateway, phone: str = PHONE) -> str:
    order = await gw.order(phone)
    assert order.number
    await gw.replied(order.number)
    await gw.tick()
    return order.number


async def say(gw: SmsGateway, text: str, seq: int | str, phone: str = PHONE) -> None:
    assert await alibaba_up(gw.client, phone, text, seq) == (200, OK)
    await gw.deliver()


async def events(gw: SmsGateway, number: str) -> list[str]:
    order = await gw.work_order(number)
    async with gw.surveys.sessions() as session:
        rows = await session.scalars(
            select(WorkOrderEvent.status).where(WorkOrderEvent.work_order_id == order.id).order_by(WorkOrderEvent.id)
        )
        return list(rows.all())


async def test_reply_before_the_window_closes_the_order(gw: SmsGateway, provider: AlibabaServer) -> None:
    number = await replied_and_surveyed(gw)
    [survey_sms] = provider.sent
    assert survey_sms.template == "SMS_100002" and survey_sms.sign == "济源12345"
    text = survey_sms.text
    assert f"工单尾号{number[-4:]}" in text and "路灯已修复" in text and "1满意2基本满意3不满意" in text
    assert "24小时未回复视为基本满意" in text and len(text) + len("【济源12345】") <= 70
    survey = await gw.survey(number)
    assert survey.status == "open" and survey.due_at is not None
    assert survey.due_at - survey.sent_at == __import__("datetime").timedelta(hours=24)

    gw.clock.advance(hours=3)
    await say(gw, "１", seq=1001)  # full-width digit
    survey = await gw.survey(number)
    assert (survey.status, survey.rating, survey.defaulted) == ("answered", "satisfied", False)
    assert survey.outcome == "closed"
    assert (await gw.work_order(number)).status == "closed"
    assert "已记录：满意" in provider.texts()[-1]

    gw.clock.advance(hours=30)
    assert (await gw.tick())["defaulted"] == 0
    assert (await gw.survey(number)).rating == "satisfied"
    assert (await events(gw, number)).count("closed") == 1


async def test_silence_gives_the_default_once_and_the_guilin_rule(gw: SmsGateway, provider: AlibabaServer) -> None:
    first = await replied_and_surveyed(gw)
    gw.clock.advance(hours=23, minutes=59)
    assert (await gw.tick())["defaulted"] == 0
    assert (await gw.survey(first)).status == "open"
    gw.clock.advance(minutes=2)
    assert (await gw.tick())["defaulted"] == 1
    survey = await gw.survey(first)
    assert (survey.status, survey.rating, survey.defaulted) == ("defaulted", "basically_satisfied", True)  # 济源
    assert survey.history == [{"at": gw.clock().isoformat(), "text": "", "meaning": "default", "reason": "no_reply"}]
    assert (await gw.work_order(first)).status == "closed"
    assert (await gw.tick())["defaulted"] == 0

    gw.use_profile(GUILIN)  # 桂林 第十四条(二): 24 小时内未回复, 默认为满意
    second = await replied_and_surveyed(gw, "13900001111")
    assert "24小时未回复视为满意" in "".join(provider.texts("13900001111"))
    gw.clock.advance(hours=24, seconds=1)
    assert (await gw.tick())["defaulted"] == 1
    assert (await gw.survey(second)).rating == "satisfied"
    assert (await events(gw, second)).count("closed") == 1


async def test_replicas_and_a_restart_apply_the_default_exactly_once(tmp_path: Path, provider: AlibabaServer) -> None:
    clock = Clock(morning())
    numbers = []
    async with sms_gateway(tmp_path, provider, clock=clock) as first:
        for i in range(6):
            numbers.append(await replied_and_surveyed(first, f"1390000{i:04d}"))
        assert len(provider.sent) >= 6
    clock.advance(hours=25)  # the gateway was down when the windows ended
    async with sms_gateway(tmp_path, provider, clock=clock) as a, sms_gateway(tmp_path, provider, clock=clock) as b:
        counts = await asyncio.gather(a.surveys.apply_defaults(clock()), b.surveys.apply_defaults(clock()),
                                      a.surveys.apply_defaults(clock()))
        assert sum(counts) == 6
        for number in numbers:
            assert (await a.survey(number)).status == "defaulted"
            assert (await events(a, number)).count("closed") == 1
    async with sms_gateway(tmp_path, provider, clock=clock) as again:
        assert (await again.tick())["defaulted"] == 0


async def test_reply_after_the_window_keeps_the_default_and_reaches_a_person(
    gw: SmsGateway, provider: AlibabaServer
) -> None:
    number = await replied_and_surveyed(gw)
    gw.clock.advance(hours=26)  # the tick has not run yet
    await say(gw, "3", seq=2001)
    survey = await gw.survey(number)
    assert (survey.status, survey.rating, survey.defaulted) == ("defaulted", "basically_satisfied", True)
    assert survey.history[-1]["meaning"] == "late:unsatisfied"
    assert "评价时间已过" in provider.texts()[-1]
    assert [r.reason for r in await gw.revisits()] == ["late_unsatisfied"]
    assert (await gw.work_order(number)).status == "closed"
    assert (await gw.tick())["defaulted"] == 0


async def test_correction_within_the_window(gw: SmsGateway, provider: AlibabaServer) -> None:
    gw.use_profile(HAOJIANG)
    number = await replied_and_surveyed(gw)
    await say(gw, "满意", seq=1)
    assert (await gw.work_order(number)).status == "closed"
    await say(gw, " 3 不满意 ", seq=2)  # 濠江 四(五): 评价错误的 … 核改评价结果
    survey = await gw.survey(number)
    assert (survey.rating, survey.corrections, survey.outcome) == ("unsatisfied", 1, "redo")
    order = await gw.work_order(number)
    assert order.status == "reopened"
    assert "更正为：不满意" in provider.texts()[-1]
    await say(gw, "非常满意", seq=3)  # changed their mind again: the redo is withdrawn
    survey = await gw.survey(number)
    assert (survey.rating, survey.corrections, survey.outcome) == ("very_satisfied", 2, "closed")
    assert (await gw.work_order(number)).status == "closed"
    gw.clock.advance(hours=25)
    await say(gw, "1", seq=4)
    assert "评价时间已过" in provider.texts()[-1]
    assert (await gw.survey(number)).rating == "very_satisfied"


async def test_no_correction_where_the_profile_forbids_it(gw: SmsGateway, provider: AlibabaServer) -> None:
    gw.use_profile(with_survey(JIYUAN, allow_correction=False))
    number = await replied_and_surveyed(gw)
    await say(gw, "好", seq=1)
    await say(gw, "差", seq=2)
    assert (await gw.survey(number)).rating == "satisfied"
    assert "不能再修改" in provider.texts()[-1]


async def test_two_open_surveys_for_one_phone(gw: SmsGateway, provider: AlibabaServer) -> None:
    older = await replied_and_surveyed(gw)
    gw.clock.advance(minutes=10)
    newer = await replied_and_surveyed(gw)
    await say(gw, "2", seq=1)
    assert (await gw.survey(newer)).rating == "basically_satisfied"
    assert (await gw.survey(older)).status == "open"
    ack = provider.texts()[-1] if "多张" in provider.texts()[-1] else "".join(provider.texts()[-2:])
    assert newer[-4:] in ack and older[-4:] in ack and "多张" in ack
    await say(gw, f"非常不满意 {older[-4:]}", seq=2)  # the order's short number picks the other survey
    assert (await gw.survey(older)).rating == "very_unsatisfied"
    assert (await gw.survey(newer)).rating == "basically_satisfied"
    await say(gw, f"1 {older}", seq=3)  # the full number works too: a correction of the older one
    assert (await gw.survey(older)).rating == "satisfied"


async def test_unreadable_reply_gets_one_clarifying_sms(gw: SmsGateway, provider: AlibabaServer) -> None:
    number = await replied_and_surveyed(gw)
    sent_before = len(provider.sent)
    await say(gw, "嗯嗯 收到", seq=1)
    assert "没看懂" in provider.texts()[-1] and len(provider.sent) == sent_before + 1
    survey = await gw.survey(number)
    assert survey.clarified and survey.status == "open"
    await say(gw, "嗯嗯 收到", seq=2)  # not a second clarification: it goes to the bot (offline here)
    await gw.settle()
    assert "没看懂" not in provider.texts()[-1]
    assert (await gw.survey(number)).status == "open"
    await say(gw, "3", seq=3)
    assert (await gw.survey(number)).rating == "unsatisfied"


async def test_opt_out_is_recorded_and_honoured(gw: SmsGateway, provider: AlibabaServer) -> None:
    first = await replied_and_surveyed(gw)
    await say(gw, "ｔｄ", seq=1)
    assert "已退订" in provider.texts()[-1]
    async with gw.surveys.sessions() as session:
        assert await session.scalar(select(func.count(SmsOptOut.id)).where(SmsOptOut.phone == PHONE)) == 1
    assert (await gw.survey(first)).status == "open"  # the SMS already out may still be answered
    sent = len(provider.sent)
    second = await replied_and_surveyed(gw)
    assert len(provider.sent) == sent  # no survey SMS to a number that opted out
    assert (await gw.survey(second)).status == "opted_out"
    assert [r.reason for r in await gw.revisits()] == ["no_sms_survey"]
    await say(gw, "退订", seq=2)
    assert len(provider.sent) == sent  # said once

    provider.down = True  # a survey already queued when the citizen opts out is not sent either
    third = await replied_and_surveyed(gw, "13900005555")
    assert (await gw.survey(third)).status == "queued"
    await say(gw, "TD", seq=3, phone="13900005555")
    provider.down = False
    gw.clock.advance(minutes=10)
    await gw.deliver()
    assert not any(s.phone == "13900005555" and "尾号" in s.text for s in provider.sent)
    assert (await gw.survey(third)).status == "opted_out"


async def test_unsatisfied_redo_then_the_rule_after_the_last_redo(gw: SmsGateway, provider: AlibabaServer) -> None:
    order = await gw.order()
    number = order.number
    assert number
    await gw.replied(number)
    await gw.tick()
    await say(gw, "3", seq=1)
    order = await gw.work_order(number)
    # 济源 第十四条(一): 重新办理 … 可在相应类型工单办理时限基础上延长 2 个工作日 (complaint: 7 + 2)
    assert order.status == "reopened"
    assert aware(order.due_at) == due_date(gw.clock(), 9, count_start_day=True)
    assert "重新办理" in provider.texts()[-1]
    assert [r.reason for r in await gw.revisits()] == ["unsatisfied"]
    body = await gw.event(number, "signed")
    assert body["order"]["history"][-2]["status"] == "reopened"  # the backend sees why
    await gw.event(number, "replied", answer="已再次检修并更换线路")
    await gw.tick()
    assert "已再次检修" in "".join(provider.texts()[-2:])
    await say(gw, "非常不满意", seq=2)
    second = await gw.survey(number, 2)
    assert (second.rating, second.outcome) == ("very_unsatisfied", "revisit")  # 济源: after_last_redo revisit
    assert len(await gw.revisits()) == 2


async def test_zhijiang_second_unsatisfied_goes_to_expert_review(gw: SmsGateway, provider: AlibabaServer) -> None:
    gw.use_profile(ZHIJIANG)
    number = await replied_and_surveyed(gw)
    await say(gw, "不满意", seq=1)
    assert (await gw.work_order(number)).status == "reopened"
    await gw.event(number, "replied", answer="重新处理完毕")
    await gw.tick()
    await say(gw, "不满意", seq=2)
    assert (await gw.work_order(number)).status == "expert_review"  # 枝江 第二十条(二)
    assert (await gw.survey(number, 2)).outcome == "expert_review"
    assert "专业评价" in provider.texts()[-1]
    await gw.event(number, "closed", note="专业评价后结案")
    assert (await gw.work_order(number)).status == "closed"


async def test_haojiang_redo_keeps_the_same_limit(gw: SmsGateway) -> None:
    gw.use_profile(HAOJIANG)
    number = await replied_and_surveyed(gw)
    await say(gw, "3", seq=1)
    order = await gw.work_order(number)
    assert aware(order.due_at) == due_date(gw.clock(), 7, count_start_day=True)


async def test_no_survey_sms_in_quiet_hours(tmp_path: Path, provider: AlibabaServer) -> None:
    clock = Clock(morning(hour=22))
    async with sms_gateway(tmp_path, provider, clock=clock) as gw:
        number = await replied_and_surveyed(gw)
        assert provider.sent == [] and (await gw.survey(number)).status == "scheduled"
        clock.advance(hours=9, minutes=59)  # 07:59
        await gw.tick()
        assert provider.sent == []
        clock.advance(minutes=1)  # 08:00
        await gw.tick()
        assert len(provider.sent) >= 1 and (await gw.survey(number)).status == "open"
        gw.use_profile(with_survey(JIYUAN, quiet_hours=None))
        clock.advance(hours=14)  # 22:00, but this profile has no quiet hours
        other = await replied_and_surveyed(gw, "13900002222")
        assert (await gw.survey(other)).status == "open"


async def test_provider_outage_loses_nothing(gw: SmsGateway, provider: AlibabaServer) -> None:
    provider.down = True
    order = await gw.order()
    assert order.number
    await gw.replied(order.number)
    await gw.tick()
    assert provider.sent == []
    survey = await gw.survey(order.number)
    assert survey.status == "queued" and survey.due_at is None  # the window has not started
    gw.clock.advance(hours=30)
    assert (await gw.tick())["defaulted"] == 0  # no default for an SMS nobody received
    gw.clock.advance(days=6)  # past 济源's 3 working days: a person phones; the SMS still goes when it can
    assert (await gw.tick())["overdue"] == 1
    assert (await gw.tick())["overdue"] == 0
    assert [r.reason for r in await gw.revisits()] == ["survey_overdue"]
    provider.down = False
    gw.clock.advance(minutes=20)
    await gw.deliver()
    assert f"尾号{order.number[-4:]}" in "".join(provider.texts())
    survey = await gw.survey(order.number)
    assert survey.status == "open" and aware(survey.sent_at) == gw.clock()


@pytest.mark.parametrize(("replied_on", "last_quiet", "first_flagged"), [
    (BEFORE_NATIONAL_DAY, "2026-10-08T23:00", "2026-10-09T08:00"),  # 09-29, 09-30, 10-08
    (BEFORE_SPRING_FESTIVAL, "2026-02-24T23:00", "2026-02-25T08:00"),  # 02-13, Saturday 02-14, 02-24
    (MAKE_UP_SATURDAY, "2026-10-14T23:00", "2026-10-15T08:00"),  # replied on a worked Saturday
])
async def test_holiday_weeks_count_working_days_before_a_person_phones(
    tmp_path: Path, provider: AlibabaServer, replied_on: dt.date, last_quiet: str, first_flagged: str
) -> None:
    """济源: a survey SMS still not out after 3 working days goes to a person; holidays don't count,
    make-up Saturdays do. The dates are fixed: the test means the same on every day it runs."""
    provider.down = True
    clock = Clock(morning(replied_on))
    async with sms_gateway(tmp_path, provider, clock=clock) as gw:
        number = await replied_and_surveyed(gw)
        assert (await gw.survey(number)).status == "queued"
        clock.now = dt.datetime.fromisoformat(last_quiet).replace(tzinfo=TZ).astimezone(dt.UTC)
        assert (await gw.tick())["overdue"] == 0
        clock.now = dt.datetime.fromisoformat(first_flagged).replace(tzinfo=TZ).astimezone(dt.UTC)
        assert (await gw.tick())["overdue"] == 1
        assert [r.reason for r in await gw.revisits()] == ["survey_overdue"]


async def test_duplicate_callbacks_are_recorded_once_and_failed_delivery_is_flagged(
    gw: SmsGateway, provider: AlibabaServer
) -> None:
    number = await replied_and_surveyed(gw)
    await say(gw, "1", seq=77)
    await say(gw, "1", seq=77)
    survey = await gw.survey(number)
    assert len(survey.history) == 1 and survey.corrections == 0
    ack = provider.sent[-1]
    for _ in range(2):
        assert await alibaba_report(gw.client, ack, success=True) == (200, OK)
    records = {r.provider_id: r for r in await gw.records()}
    assert records[ack.provider_id].delivery == "delivered"
    async with gw.surveys.sessions() as session:
        keys = await session.scalar(select(func.count(InboxKey.id)).where(InboxKey.source == "sms:alibaba"))
    assert keys == 2  # one uplink, one report

    other = await replied_and_surveyed(gw, "13900003333")
    survey_sms = [s for s in provider.sent if s.phone == "13900003333"][0]
    for _ in range(2):
        assert await alibaba_report(gw.client, survey_sms, success=False) == (200, OK)
    assert (await gw.survey(other)).status == "failed"
    revisits = [r for r in await gw.revisits() if r.reason == "survey_sms_failed"]
    assert len(revisits) == 1 and revisits[0].phone == "13900003333"
    gw.clock.advance(hours=25)
    await gw.tick()
    assert (await gw.survey(other)).status == "failed"  # no default for an SMS that never arrived


async def test_rejected_number_is_flagged_for_a_phone_revisit(gw: SmsGateway, provider: AlibabaServer) -> None:
    provider.fail_numbers["13900004444"] = "isv.MOBILE_NUMBER_ILLEGAL"
    number = await replied_and_surveyed(gw, "13900004444")
    assert (await gw.survey(number)).status == "failed"
    assert [r.reason for r in await gw.revisits()] == ["survey_sms_failed"]


async def test_surveys_table_survives_dataclass_profile_variants() -> None:
    assert dataclasses.replace(JIYUAN).survey.default_rating == "basically_satisfied"
    assert GUILIN.survey.default_rating == "satisfied" and HAOJIANG.survey.redo_extra_working_days is None
    assert Survey.__tablename__ == "surveys"


async def test_an_external_ticket_system_is_told_of_the_redo(tmp_path: Path, provider: AlibabaServer) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from handoff.notify import sign

    received: list[dict[str, object]] = []
    attempts = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal attempts
        attempts += 1
        raw = await request.read()
        stamp = request.headers["X-Hotline-Timestamp"]
        assert request.headers["X-Hotline-Signature"] == sign("callback-secret", stamp, raw)
        if attempts == 1:
            return web.Response(status=503)  # the ticket system is down once: retried, not lost
        received.append(__import__("json").loads(raw))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with sms_gateway(tmp_path, provider, ticket_webhook_url=f"http://127.0.0.1:{server.port}/hook") as gw:
            number = await replied_and_surveyed(gw)
            await say(gw, "3", seq=1)
            assert attempts == 1 and received == []
            gw.clock.advance(minutes=5)
            await gw.deliver()
            [note] = received
            assert (note["number"], note["event"], note["rating"]) == (number, "reopened", "unsatisfied")
            assert note["round"] == 1
    finally:
        await server.close()


CONFIRM = [{"title": "确认提交", "payload": "/affirm"}, {"title": "修改", "payload": "/correct"},
           {"title": "取消", "payload": "/cancel"}]


async def bot_offers_choices(gw: SmsGateway, phone: str = PHONE) -> None:
    """The citizen is in an SMS intake at the confirm step: the bot's latest SMS offered choices."""
    async with gw.surveys.sessions() as session:
        conv = await session.scalar(select(Conversation).where(Conversation.channel == "sms",
                                                               Conversation.sender_id == phone))
        if conv is None:
            conv = Conversation(channel="sms", sender_id=phone, profile="jiyuan", state="bot")
            session.add(conv)
            await session.flush()
        out = Message(conversation_id=conv.id, direction="out", text="请核对您的投诉信息", status="outbox",
                      created_at=gw.clock(), payload={"buttons": CONFIRM})
        session.add(out)
        await session.flush()
        enqueue(session, channel="sms", recipient=phone, body={"text": out.text, "buttons": CONFIRM},
                dedupe_key=f"message:{out.id}", conversation_id=conv.id, message_id=out.id, not_before=gw.clock())
        await session.commit()
    await gw.deliver()


async def to_the_bot(gw: SmsGateway) -> list[str]:
    async with gw.surveys.sessions() as session:
        return list((await session.scalars(select(Message.text).where(Message.direction == "in"))).all())


async def test_survey_then_new_intake_ratings_still_reach_the_survey(gw: SmsGateway, provider: AlibabaServer) -> None:
    """Issue 13's defect: once the bot asked something, no survey reply from that phone counted."""
    number = await replied_and_surveyed(gw)
    gw.clock.advance(hours=2)
    await bot_offers_choices(gw)
    await say(gw, "满意", seq=1)  # no choice of the bot's is called 满意
    survey = await gw.survey(number)
    assert (survey.status, survey.rating) == ("answered", "satisfied")
    assert (await gw.work_order(number)).status == "closed"
    await say(gw, f"尾号{number[-4:]}不满意", seq=2)  # an explicit 尾号, a correction within the window
    survey = await gw.survey(number)
    assert (survey.rating, survey.corrections, survey.outcome) == ("unsatisfied", 1, "redo")
    assert (await gw.work_order(number)).status == "reopened"
    assert "更正为：不满意" in provider.texts()[-1]
    assert await to_the_bot(gw) == []
    gw.clock.advance(hours=30)
    assert (await gw.tick())["defaulted"] == 0
    assert (await gw.survey(number)).rating == "unsatisfied"


async def test_a_reply_both_could_take_is_asked_about_not_guessed(gw: SmsGateway, provider: AlibabaServer) -> None:
    number = await replied_and_surveyed(gw)
    gw.clock.advance(hours=1)
    await bot_offers_choices(gw)
    await say(gw, "3", seq=1)  # 3不满意, or 3取消?
    assert provider.texts()[-1] == f"热线回复：您是在评价工单尾号{number[-4:]}吗？请回复“是”或“不是”。"
    assert (await gw.survey(number)).status == "open" and await to_the_bot(gw) == []
    await say(gw, "是", seq=2)
    survey = await gw.survey(number)
    assert (survey.status, survey.rating, survey.outcome) == ("answered", "unsatisfied", "redo")
    assert [h["meaning"] for h in survey.history] == ["ask:unsatisfied", "unsatisfied"]
    assert [h["text"] for h in survey.history] == ["3", "是"]
    assert "已记录：不满意" in provider.texts()[-1]

    other = await replied_and_surveyed(gw, "13900003333")
    await bot_offers_choices(gw, "13900003333")
    await say(gw, "1", seq=3, phone="13900003333")
    assert "吗？" in provider.texts("13900003333")[-1]
    await say(gw, "不是", seq=4, phone="13900003333")  # it was 确认提交: the bot gets the "1" after all
    await gw.settle()
    survey = await gw.survey(other)
    assert (survey.status, survey.rating) == ("open", None)
    assert survey.history[-1]["meaning"] == "not_for_survey"
    assert await to_the_bot(gw) == ["1"]  # kept as written; the router reads it as 确认提交 for the bot


async def test_intake_then_survey(gw: SmsGateway, provider: AlibabaServer) -> None:
    """The bot asked before the survey SMS came: a digit could still be the bot's, so ask; a word is the survey's."""
    await bot_offers_choices(gw)
    gw.clock.advance(minutes=5)
    number = await replied_and_surveyed(gw)
    await say(gw, "2", seq=1)
    assert "是在评价工单尾号" in provider.texts()[-1] and (await gw.survey(number)).status == "open"
    await say(gw, "基本满意", seq=2)  # not 是/不是: the question lapses and the reply is read afresh
    survey = await gw.survey(number)
    assert (survey.status, survey.rating) == ("answered", "basically_satisfied")
    assert [h["meaning"] for h in survey.history] == ["ask:basically_satisfied", "ask_unanswered",
                                                      "basically_satisfied"]
    await say(gw, "是", seq=3)  # no question is open any more: 是 is not a rating
    await gw.settle()
    assert (await gw.survey(number)).rating == "basically_satisfied"


async def test_two_open_surveys_while_the_bot_asks(gw: SmsGateway, provider: AlibabaServer) -> None:
    older = await replied_and_surveyed(gw)
    gw.clock.advance(minutes=10)
    newer = await replied_and_surveyed(gw)
    gw.clock.advance(minutes=10)
    await bot_offers_choices(gw)
    await say(gw, f"工单尾号{older[-4:]} 不满意", seq=1)
    assert (await gw.survey(older)).rating == "unsatisfied"
    assert (await gw.survey(newer)).status == "open"
    await say(gw, "非常满意", seq=2)
    assert (await gw.survey(newer)).rating == "very_satisfied"
    assert (await gw.survey(older)).rating == "unsatisfied"
    await say(gw, "3", seq=3)  # could be 取消: asked about the latest survey, not guessed
    assert f"尾号{newer[-4:]}吗" in provider.texts()[-1]
    await say(gw, f"{older[-4:]} 满意", seq=4)  # an explicit number answers instead
    assert (await gw.survey(older)).rating == "satisfied"
    assert (await gw.survey(newer)).rating == "very_satisfied"
    assert await to_the_bot(gw) == []


async def test_a_held_rating_confirmed_after_the_default_replaces_it(
    gw: SmsGateway, provider: AlibabaServer
) -> None:
    number = await replied_and_surveyed(gw)
    await bot_offers_choices(gw)
    gw.clock.advance(hours=20)
    await say(gw, "3", seq=1)
    gw.clock.advance(hours=5)  # the window ended before the citizen said 是
    assert (await gw.tick())["defaulted"] == 1
    survey = await gw.survey(number)
    assert (survey.status, survey.rating) == ("defaulted", "basically_satisfied")
    assert survey.history[-1] == {"at": gw.clock().isoformat(), "text": "", "meaning": "default",
                                  "reason": "unconfirmed_reply"}
    assert [r.reason for r in await gw.revisits()] == ["unconfirmed_reply"]
    assert (await gw.work_order(number)).status == "closed"
    await say(gw, "是", seq=2)  # the reply came in time: the default never overwrites it
    survey = await gw.survey(number)
    assert (survey.status, survey.rating, survey.defaulted, survey.outcome) == (
        "answered", "unsatisfied", False, "redo")
    assert (await gw.work_order(number)).status == "reopened"
    assert "unsatisfied" in [r.reason for r in await gw.revisits()]
    assert (await gw.tick())["defaulted"] == 0
    assert (await gw.survey(number)).rating == "unsatisfied"


async def test_a_question_left_unanswered_for_a_day_is_not_answered_by_a_later_yes(
    gw: SmsGateway, provider: AlibabaServer
) -> None:
    number = await replied_and_surveyed(gw)
    await bot_offers_choices(gw)
    await say(gw, "3", seq=1)
    gw.clock.advance(hours=25)
    assert (await gw.tick())["defaulted"] == 1
    gw.clock.advance(hours=1)  # 26 hours after the question: this 是 answers something else
    await say(gw, "是", seq=2)
    await gw.settle()
    survey = await gw.survey(number)
    assert (survey.status, survey.rating, survey.defaulted) == ("defaulted", "basically_satisfied", True)
    assert [r.reason for r in await gw.revisits()] == ["unconfirmed_reply"]  # a person asks instead
    assert await to_the_bot(gw) == ["是"]


async def test_a_reply_held_after_the_window_keeps_the_default(gw: SmsGateway, provider: AlibabaServer) -> None:
    number = await replied_and_surveyed(gw)
    await bot_offers_choices(gw)
    gw.clock.advance(hours=25)
    assert (await gw.tick())["defaulted"] == 1
    assert (await gw.survey(number)).history[-1]["reason"] == "no_reply"
    await say(gw, "3", seq=1)
    await say(gw, "是", seq=2)
    survey = await gw.survey(number)
    assert (survey.status, survey.rating) == ("defaulted", "basically_satisfied")
    assert "评价时间已过" in provider.texts()[-1]
    assert [r.reason for r in await gw.revisits()] == ["late_unsatisfied"]


async def hotline(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """The `hotline` command in its own process, as an operator runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, env={**os.environ, **env}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_surveys_tick_at_a_time_sends_then_defaults_exactly_once(tmp_path: Path, provider: AlibabaServer) -> None:
    """Issue 13's "done when", as an outside integrator: `hotline surveys tick --at …` sends the survey,
    then applies the default once; the survey view shows send_at and default_at."""
    start = morning()  # Tuesday 2026-12-01 10:00 China time
    async with sms_gateway(tmp_path, provider, clock=Clock(start)) as gw:
        order = await gw.order()
        assert order.number
        await gw.replied(order.number)
        resp = await gw.client.get(f"/api/tickets/{order.number}/survey", headers={"Authorization": "Bearer test-token"})
        [view] = (await resp.json())["surveys"]
        assert view["status"] == "scheduled" and dt.datetime.fromisoformat(view["send_at"]) == start
        assert dt.datetime.fromisoformat(view["default_at"]) == start + dt.timedelta(hours=24)
        settings = gw.app[SETTINGS]
    assert provider.sent == []
    env = {"HOTLINE_DATABASE_URL": settings.database_url, "HOTLINE_SMS_PROVIDER": "alibaba",
           "HOTLINE_SMS_API_URL": provider.url, "HOTLINE_SMS_KEY_ID": KEY_ID, "HOTLINE_SMS_KEY_SECRET": KEY_SECRET,
           "HOTLINE_SMS_SIGN_NAME": "济源12345", "HOTLINE_SMS_TEMPLATE_REPLY": "SMS_100001",
           "HOTLINE_SMS_TEMPLATE_SURVEY": "SMS_100002", "HOTLINE_PROFILE": "jiyuan"}

    code, _, err = await hotline("surveys", "tick", "--at", "2026-12-01T10:05:00+08:00", env=env)
    assert code == 2 and "--ahead" in err and provider.sent == []  # a future time sends nothing unless told
    runs = {}
    for at in ("2026-12-01T10:05:00+08:00", "2026-12-02T10:00:00+08:00", "2026-12-02T10:06:00+08:00",
               "2026-12-02T11:00:00+08:00"):
        code, out, err = await hotline("surveys", "tick", "--at", at, "--ahead", env=env)
        assert code == 0, err
        runs[at] = json.loads(out)
    assert [(r["sent"], r["delivered"], r["defaulted"]) for r in runs.values()] == [(1, 1, 0), (0, 0, 0), (0, 0, 1),
                                                                                    (0, 0, 0)]
    [survey_sms] = provider.sent
    assert f"尾号{order.number[-4:]}" in survey_sms.text
    async with sms_gateway(tmp_path, provider, clock=Clock(start + dt.timedelta(days=1, hours=2))) as gw:
        survey = await gw.survey(order.number)
        assert (survey.status, survey.rating, survey.history[-1]["reason"]) == (
            "defaulted", "basically_satisfied", "no_reply")
        assert aware(survey.sent_at) == start + dt.timedelta(minutes=5)
        assert (await events(gw, order.number)).count("closed") == 1


async def test_a_five_level_profile_surveys_and_reads_the_good_bad_scale(
    gw: SmsGateway, provider: AlibabaServer
) -> None:
    """濠江 (好差评, GB/T 39735-2020): the survey SMS offers five levels through its own template,
    "5" is 非常不满意 (a redo), and the clarifying SMS names the five digits."""
    gw.use_profile(load("haojiang"))
    number = await replied_and_surveyed(gw)
    [survey_sms] = provider.sent
    assert survey_sms.template == "SMS_100006" and "回复1非常满意2满意3基本满意4不满意5非常不满意" in survey_sms.text
    assert "问卷" not in survey_sms.text and "好评" not in survey_sms.text
    await say(gw, "六六", seq=1)
    assert "1非常满意、2满意、3基本满意、4不满意、5非常不满意" in provider.texts()[-1]
    await say(gw, "5", seq=2)
    survey = await gw.survey(number)
    assert (survey.status, survey.rating) == ("answered", "very_unsatisfied")
    assert (await gw.work_order(number)).status == "reopened"
    assert "已记录：非常不满意" in provider.texts()[-1]


async def test_a_long_answer_reaches_the_citizen_whole_before_the_survey(
    gw: SmsGateway, provider: AlibabaServer
) -> None:
    """A handling unit's long answer: notice templates carry all of it, each SMS one segment within
    Alibaba's 35 characters per variable, then the survey names it in a few words."""
    order = await gw.order()
    assert order.number
    answer = ("经核查，您反映的路灯损坏问题属实。我局已安排电工到现场检修，更换了损坏的灯泡和老化的线路，"
              "并对周边其他路灯进行了排查，发现两处隐患一并处理。目前该路段照明已恢复正常，今后将加强日常巡查。")
    await gw.replied(order.number, answer=answer)
    await gw.tick()
    templates = [s.template for s in provider.sent]
    assert templates[-1] == "SMS_100002" and set(templates[:-1]) == {"SMS_100003"} and len(templates) >= 4
    assert "".join(s.values["text"] for s in provider.sent[:-1]) == answer
    assert all(len(s.text) + len("【济源12345】") <= 70 and all(len(v) <= 35 for v in s.values.values())
               for s in provider.sent)
    assert provider.sent[-1].values["text"].endswith("…")
    assert (await gw.survey(order.number)).status == "open"  # the window starts when all of it is out
