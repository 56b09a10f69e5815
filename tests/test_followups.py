"""Withdraw, supplement and repeats (濠江 三(六), 三(四)6; 济源 第十条(七), 第二十九条) and limited senders
(济源 第三十三条), on a real SQLite database through the backend's own functions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy import select, update

from common.china_time import CHINA_TZ
from gateway.limits import SenderLimits
from handoff import followups
from handoff.models import WorkOrder
from handoff.workorders import create_from_intake, get_by_number
from profiles import load
from storage.conversations import Conversation, Message
from storage.outbox import OutboxItem
from tests.conftest import Clock

JIYUAN = load("jiyuan")
NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=CHINA_TZ)
NOISE = "天坛路88号楼下的烧烤店每天晚上营业到凌晨两点，油烟和噪音特别大，影响休息"
PHONE = "13800001234"


async def conversation(sessions, sender: str = "c1", channel: str = "web") -> int:  # noqa: ANN001
    async with sessions() as session:
        conv = Conversation(channel=channel, sender_id=sender, profile="jiyuan", state="bot")
        session.add(conv)
        await session.commit()
        return conv.id


def intake(content: str = NOISE, place: str = "天坛路88号", phone: str = PHONE, **extra: object) -> dict[str, object]:
    return {
        "intake_id": uuid.uuid4().hex, "category": "complaint", "content": content, "place": place,
        "event_time": "每天晚上", "phone": phone, "anonymous": True, **extra,
    }


async def set_status(sessions, number: str, status: str) -> None:  # noqa: ANN001
    async with sessions() as session:
        await session.execute(update(WorkOrder).where(WorkOrder.number == number).values(status=status))
        await session.commit()


async def test_same_matter_from_same_contact_is_attached_not_duplicated(sessions) -> None:
    first = await create_from_intake(sessions, intake(), JIYUAN, channel="web", conversation_id=None, now=NOW)
    again = await create_from_intake(
        sessions, intake("天坛路88号楼下那家烧烤店又营业到凌晨两点了，噪音油烟太大"), JIYUAN,
        channel="wechat:mp", conversation_id=None, now=NOW,
    )
    assert (again.outcome, again.number) == ("attached", first.number)
    assert "同一件事" in again.citizen_text() and first.number in again.citizen_text()
    order = await get_by_number(sessions, first.number)
    assert order is not None and order.repeat_count == 1
    assert order.supplements[0]["channel"] == "wechat:mp" and order.supplements[0]["kind"] == "repeat"
    async with sessions() as session:
        assert len((await session.scalars(select(WorkOrder))).all()) == 1


async def test_different_matter_contact_or_kind_makes_a_new_order(sessions) -> None:
    first = await create_from_intake(sessions, intake(), JIYUAN, channel="web", conversation_id=None, now=NOW)
    other_phone = await create_from_intake(sessions, intake(phone="13900002222"), JIYUAN, channel="web",
                                           conversation_id=None, now=NOW)
    other_matter = await create_from_intake(
        sessions, intake("小区门口的井盖缺了一块，晚上很危险，已经有人差点摔倒"), JIYUAN, channel="web",
        conversation_id=None, now=NOW,
    )
    other_kind = await create_from_intake(sessions, {**intake(), "category": "report"}, JIYUAN, channel="web",
                                          conversation_id=None, now=NOW)
    numbers = {first.number, other_phone.number, other_matter.number, other_kind.number}
    assert len(numbers) == 4 and all(r.outcome == "created" for r in (other_phone, other_matter, other_kind))


async def test_retried_repeat_is_counted_once(sessions) -> None:
    first = await create_from_intake(sessions, intake(), JIYUAN, channel="web", conversation_id=None, now=NOW)
    repeat = intake("天坛路88号烧烤店噪音油烟还是很大，每天晚上到凌晨两点")
    for _ in range(3):
        await create_from_intake(sessions, repeat, JIYUAN, channel="web", conversation_id=None, now=NOW)
    order = await get_by_number(sessions, first.number)
    assert order is not None and order.repeat_count == 1


async def test_more_than_three_repeats_escalate(sessions) -> None:
    """济源 第二十九条(一): 连续或者超过 3 次重复求助、投诉、举报的 → 督办."""
    first = await create_from_intake(sessions, intake(), JIYUAN, channel="web", conversation_id=None, now=NOW)
    for i in range(JIYUAN.repeats.escalate_after + 1):
        order = await get_by_number(sessions, first.number)
        assert order is not None and order.escalated is False
        await create_from_intake(sessions, intake(f"{NOISE}，这是第{i + 2}次反映了"), JIYUAN, channel="web",
                                 conversation_id=None, now=NOW)
    order = await get_by_number(sessions, first.number)
    assert order is not None and order.repeat_count == 4 and order.escalated is True
    assert [e.status for e in order.events].count("escalated") == 1


async def test_closed_matter_without_new_facts_is_screened_as_repeat(sessions) -> None:
    """济源 第十条(七): 已办结、以同一事实和理由再次反映的, 不予受理 — with the earlier number."""
    first = await create_from_intake(sessions, intake(), JIYUAN, channel="web", conversation_id=None, now=NOW)
    await set_status(sessions, first.number, "closed")
    again = await create_from_intake(sessions, intake(NOISE + "。"), JIYUAN, channel="web", conversation_id=None,
                                     now=NOW)
    assert again.outcome == "repeat" and again.number == first.number
    assert "不再重复受理" in again.citizen_text() and first.number in again.citizen_text()
    # New facts about the same place make a new order.
    news = await create_from_intake(
        sessions, intake("天坛路88号烧烤店上次处理后安静了两周，这周又开始了，而且把桌子摆到了人行道上，行人只能走机动车道"),
        JIYUAN, channel="web", conversation_id=None, now=NOW,
    )
    assert news.outcome == "created" and news.number != first.number


async def test_withdraw_by_number_only_for_own_orders(sessions) -> None:
    mine = await conversation(sessions, "mine")
    other = await conversation(sessions, "other")
    receipt = await create_from_intake(sessions, intake(), JIYUAN, channel="web", conversation_id=mine, now=NOW)
    refused = (await followups.withdraw(sessions, JIYUAN, conversation_id=other, number=receipt.number, phone=None, sender_phone=None,
                                       channel="web")).text
    assert "验证码" in refused and "烧烤" not in refused
    order = await get_by_number(sessions, receipt.number)
    assert order is not None and order.status == "created"
    # An SMS from the registered phone proves it is theirs.
    done = (await followups.withdraw(sessions, JIYUAN, conversation_id=other, number=receipt.number, phone=None,
                                    sender_phone=PHONE, channel="sms")).text
    assert "已为您撤回" in done
    order = await get_by_number(sessions, receipt.number)
    assert order is not None and order.status == "withdrawn" and order.events[-1].status == "withdrawn"
    again = (await followups.withdraw(sessions, JIYUAN, conversation_id=mine, number=None, phone=None, sender_phone=None, channel="web")).text
    assert "没有找到您正在办理中的工单" in again


async def test_withdraw_without_number_asks_which_when_several(sessions) -> None:
    conv = await conversation(sessions)
    a = await create_from_intake(sessions, intake(), JIYUAN, channel="web", conversation_id=conv, now=NOW)
    b = await create_from_intake(sessions, intake("小区门口的井盖缺了一块，晚上很危险"), JIYUAN, channel="web",
                                 conversation_id=conv, now=NOW)
    text = (await followups.withdraw(sessions, JIYUAN, conversation_id=conv, number=None, phone=None, sender_phone=None, channel="web")).text
    assert a.number in text and b.number in text and "哪一个" in text
    await set_status(sessions, a.number, "closed")
    text = (await followups.withdraw(sessions, JIYUAN, conversation_id=conv, number=None, phone=None, sender_phone=None, channel="web")).text
    assert b.number in text and "已为您撤回" in text


async def test_supplement_keeps_the_clock_in_jiyuan_and_restarts_it_where_the_profile_says(sessions) -> None:
    conv = await conversation(sessions)
    receipt = await create_from_intake(sessions, intake(), JIYUAN, channel="web", conversation_id=conv, now=NOW)
    later = NOW + dt.timedelta(days=3)
    text = (await followups.supplement(sessions, JIYUAN, conversation_id=conv, number=None, phone=None, sender_phone=None,
                                      text="昨晚又吵到三点，还有人在店门口打架", channel="web", now=later)).text
    assert receipt.number in text and "重新计算" not in text
    order = await get_by_number(sessions, receipt.number)
    assert order is not None and order.due_at == receipt.due_at
    assert order.supplements[-1]["text"].startswith("昨晚又吵到三点")

    # 濠江 三(四)6: 补充新的事实 → 重新计时.
    restarting = dataclasses.replace(
        JIYUAN, withdrawal=dataclasses.replace(JIYUAN.withdrawal, supplement_restarts_clock=True)
    )
    text = (await followups.supplement(sessions, restarting, conversation_id=conv, number=receipt.number,
                                      phone=None, sender_phone=None, text="今天早上店主把垃圾倒在了绿化带里", channel="web", now=later)).text
    assert "重新计算" in text
    order = await get_by_number(sessions, receipt.number)
    assert order is not None and order.due_at > receipt.due_at
    assert order.events[-1].status == "supplemented" and "clock restarted" in order.events[-1].note


async def test_supplement_to_a_closed_order_is_refused(sessions) -> None:
    conv = await conversation(sessions)
    receipt = await create_from_intake(sessions, intake(), JIYUAN, channel="web", conversation_id=conv, now=NOW)
    await set_status(sessions, receipt.number, "closed")
    text = (await followups.supplement(sessions, JIYUAN, conversation_id=conv, number=receipt.number, phone=None, sender_phone=None,
                                      text="还有新情况", channel="web")).text
    assert "不能再补充" in text


async def test_abusive_sender_is_warned_then_limited_for_the_profiles_time(sessions) -> None:
    """济源 第三十三条: 骚扰、侮辱、威胁 … 在一定时间内限制."""
    conv_id = await conversation(sessions)
    async with sessions() as session:
        conv = await session.get(Conversation, conv_id)
    assert conv is not None
    clock = Clock(dt.datetime.now(dt.UTC))
    limits = SenderLimits(sessions, clock)
    assert (await limits.check(conv, "小区门口路灯坏了", JIYUAN)).limited_text is None
    for n in range(1, JIYUAN.abuse.strikes):
        decision = await limits.check(conv, "你们这帮废物", JIYUAN)
        assert decision.limited_text is None and f"第{n}次提醒" in (decision.warning or "")
    decision = await limits.check(conv, "一群废物", JIYUAN)
    assert decision.limited_text is not None and "第三十三条" in decision.limited_text and "24小时" in decision.limited_text
    assert (await limits.check(conv, "路灯坏了", JIYUAN)).limited_text is not None  # still limited
    clock.advance(hours=JIYUAN.abuse.limit_hours, minutes=1)
    assert (await limits.check(conv, "路灯坏了", JIYUAN)).limited_text is None


async def test_flooding_sender_is_limited(sessions) -> None:
    conv_id = await conversation(sessions)
    async with sessions() as session:
        conv = await session.get(Conversation, conv_id)
        for i in range(JIYUAN.abuse.flood_messages + 1):
            session.add(Message(conversation_id=conv_id, direction="in", text=f"{i}", status="done"))
        await session.commit()
    assert conv is not None
    decision = await SenderLimits(sessions).check(conv, "路灯坏了", JIYUAN)
    assert decision.limited_text is not None


async def test_withdrawal_is_confirmed_first(sessions) -> None:
    """A withdrawal cannot be undone: the citizen sees the order and confirms with its button."""
    conv = await conversation(sessions)
    receipt = await create_from_intake(sessions, intake(), JIYUAN, channel="web", conversation_id=conv, now=NOW)
    ask = await followups.withdraw(sessions, JIYUAN, conversation_id=conv, number=None, phone=None, sender_phone=None, channel="web",
                                   confirmed=False)
    assert receipt.number in ask.text and "烧烤店" in ask.text
    assert ask.buttons[0]["payload"] == f'/confirm_withdraw{{"order_number": "{receipt.number}"}}'
    order = await get_by_number(sessions, receipt.number)
    assert order is not None and order.status == "created"


async def sent_codes(sessions, phone: str = PHONE) -> list[str]:  # noqa: ANN001
    """The one-time codes in the SMS outbox for `phone`, oldest first: each in the verification-code
    template's variable and in its plain text."""
    async with sessions() as session:
        items = (await session.scalars(select(OutboxItem).where(
            OutboxItem.channel == "sms", OutboxItem.recipient == phone).order_by(OutboxItem.id))).all()
    assert all(i.body["kind"] == "code" and i.body["vars"]["code"] in i.body["text"] for i in items)
    return [i.body["vars"]["code"] for i in items]


async def test_a_typed_phone_proves_nothing_and_shows_nothing_until_the_code(sessions) -> None:
    """#14: a new sender typed the registered phone and saw a confidential order's number and content."""
    mine = await conversation(sessions, "mine")
    receipt = await create_from_intake(sessions, intake(confidential=True), JIYUAN, channel="web",
                                       conversation_id=mine, now=NOW)
    stranger = await conversation(sessions, "stranger")
    ask = await followups.withdraw(sessions, JIYUAN, conversation_id=stranger, number=None, phone=PHONE,
                                   sender_phone=None, channel="web", confirmed=False, now=NOW)
    assert receipt.number not in ask.text and "烧烤" not in ask.text and not ask.buttons
    assert "验证码" in ask.text and ask.queued
    [code] = await sent_codes(sessions)
    # The text a stranger gets is the same when no order has that phone, and no SMS goes anywhere.
    nobody = await followups.withdraw(sessions, JIYUAN, conversation_id=stranger, number=None, phone="13700009999",
                                      sender_phone=None, channel="web", confirmed=False, now=NOW)
    assert nobody.text == ask.text and not nobody.queued and await sent_codes(sessions, "13700009999") == []
    # A forged confirmation with a phone (the old button carried one) withdraws nothing.
    forged = await followups.withdraw(sessions, JIYUAN, conversation_id=stranger, number=receipt.number,
                                      phone="13900001111", sender_phone=None, channel="web", confirmed=True, now=NOW)
    assert "没有在您本次会话中找到" in forged.text and "烧烤" not in forged.text
    order = await get_by_number(sessions, receipt.number)
    assert order is not None and order.status == "created"

    wrong = "000000" if code != "000000" else "111111"
    miss = await followups.answer_code(sessions, JIYUAN, conversation_id=stranger, text=wrong, sender_phone=None,
                                       channel="web", now=NOW)
    assert miss is not None and "不正确" in miss.text and receipt.number not in miss.text
    # The right code, written with full-width digits, does what was asked: the confirmation question.
    right = code.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    shown = await followups.answer_code(sessions, JIYUAN, conversation_id=stranger, text=f"验证码{right}",
                                        sender_phone=None, channel="web", now=NOW)
    assert shown is not None and receipt.number in shown.text and shown.buttons
    done = await followups.withdraw(sessions, JIYUAN, conversation_id=stranger, number=receipt.number, phone=None,
                                    sender_phone=None, channel="web", confirmed=True, now=NOW)
    assert "已为您撤回" in done.text
    # The code is used up; later six digits go to the bot.
    assert await followups.answer_code(sessions, JIYUAN, conversation_id=stranger, text=code, sender_phone=None,
                                       channel="web", now=NOW) is None


async def test_a_supplement_by_typed_phone_waits_for_the_code(sessions) -> None:
    await create_from_intake(sessions, intake(), JIYUAN, channel="web", conversation_id=None, now=NOW)
    stranger = await conversation(sessions, "stranger")
    ask = await followups.supplement(sessions, JIYUAN, conversation_id=stranger, number=None, phone=PHONE,
                                     sender_phone=None, text="店主今天又把桌子摆到了人行道上", channel="web", now=NOW)
    assert "验证码" in ask.text
    async with sessions() as session:
        order = await session.scalar(select(WorkOrder))
    assert order is not None and order.supplements == []
    [code] = await sent_codes(sessions)
    added = await followups.answer_code(sessions, JIYUAN, conversation_id=stranger, text=code, sender_phone=None,
                                        channel="web", now=NOW)
    assert added is not None and order.number in added.text and "已将您补充的情况" in added.text
    order = await get_by_number(sessions, order.number or "")
    assert order is not None and order.supplements[-1]["text"] == "店主今天又把桌子摆到了人行道上"


async def test_codes_are_limited_in_tries_time_and_number(sessions) -> None:
    receipt = await create_from_intake(sessions, intake(), JIYUAN, channel="web", conversation_id=None, now=NOW)
    stranger = await conversation(sessions, "stranger")
    common = {"conversation_id": stranger, "sender_phone": None, "channel": "web"}
    await followups.withdraw(sessions, JIYUAN, number=receipt.number, phone=None, confirmed=False, now=NOW, **common)
    [code] = await sent_codes(sessions)
    wrong = "000000" if code != "000000" else "111111"
    answers = [await followups.answer_code(sessions, JIYUAN, text=wrong, now=NOW, **common)
               for _ in range(followups.CODE_TRIES)]
    assert answers[-1] is not None and "已失效" in answers[-1].text
    assert await followups.answer_code(sessions, JIYUAN, text=code, now=NOW, **common) is None  # void
    # A new code expires after its minutes.
    await followups.withdraw(sessions, JIYUAN, number=receipt.number, phone=None, confirmed=False, now=NOW, **common)
    late = NOW + dt.timedelta(minutes=followups.CODE_MINUTES, seconds=1)
    assert await followups.answer_code(sessions, JIYUAN, text=(await sent_codes(sessions))[-1], now=late,
                                       **common) is None
    # No more than CODES_PER_DAY SMS to one phone, however often a stranger asks.
    for _ in range(5):
        await followups.withdraw(sessions, JIYUAN, number=receipt.number, phone=None, confirmed=False, now=late,
                                 **common)
    assert len(await sent_codes(sessions)) == followups.CODES_PER_DAY
    order = await get_by_number(sessions, receipt.number)
    assert order is not None and order.status == "created"
