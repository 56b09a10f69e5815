"""Jurisdiction rules in whole conversations with the real bot: real name and ID (桂林 第十二条), urgency
told at handoff (内蒙古 第十条), confidentiality, withdraw and supplement (濠江 三(六), 三(四)6), abusive
senders (济源 第三十三条)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from handoff.models import WorkOrder
from storage.conversations import Message
from storage.outbox import OutboxItem
from tests.conftest import Chat, gateway_client, router_of, settings_for

pytestmark = pytest.mark.rasa

VALID_ID = "11010519491231002X"  # GB 11643 check digit X
BAD_ID = "110105194912310021"  # same digits, wrong check digit


@pytest.fixture
async def guilin(tmp_path: Path, rasa_url: str) -> AsyncIterator[TestClient]:
    async with gateway_client(settings_for(tmp_path, rasa_url, profile="guilin")) as client:
        yield client


@pytest.fixture
async def neimenggu(tmp_path: Path, rasa_url: str) -> AsyncIterator[TestClient]:
    async with gateway_client(settings_for(tmp_path, rasa_url, profile="neimenggu")) as client:
        yield client


def new_chat(client: TestClient) -> Chat:
    return Chat(client, f"r-{uuid.uuid4().hex[:12]}")


async def orders(client: TestClient) -> list[WorkOrder]:
    async with router_of(client).sessions() as session:
        return list((await session.scalars(select(WorkOrder).order_by(WorkOrder.id))).all())


async def answer_until(chat: Chat, reply: str, answers: dict[str, str], stop: str, limit: int = 8) -> str:
    """Answer whatever the bot asks from `answers` (keyed by words in the question) until `stop` shows."""
    for _ in range(limit):
        if stop in reply:
            return reply
        key = next((k for k in answers if k in reply), None)
        assert key is not None, f"unexpected question: {reply}"
        reply = Chat.text(await chat.say(answers[key]))
    raise AssertionError(f"no {stop!r} after {limit} answers: {reply}")


async def answer_until_summary(chat: Chat, reply: str, answers: dict[str, str]) -> str:
    return await answer_until(chat, reply, answers, "请核对")


COMPLAINT = "有人盗用我的照片在网上开店卖东西，这是侵权，我要投诉，店铺在七星区穿山路，上个月开始的"


async def test_guilin_infringement_complaint_needs_name_and_a_valid_id(guilin) -> None:
    chat = new_chat(guilin)
    first = Chat.text(await chat.say(COMPLAINT))
    assert "投诉" in first and "身份证号码" in first and "第十二条" in first, first
    answers = {"联系电话": "13800001234", "姓名": "张三", "什么时候": "上个月", "地点": "七星区穿山路"}
    await answer_until(chat, first, answers, "18位")
    assert "校验不通过" in Chat.text(await chat.say(BAD_ID))
    summary = await answer_until_summary(chat, Chat.text(await chat.say(VALID_ID.lower())), answers)
    assert "110***********002X" in summary and VALID_ID not in summary
    receipt = Chat.text(await chat.say("/affirm"))
    assert re.search(r"工单号：GL\d{14}", receipt), receipt
    assert "10个工作日" in receipt  # 桂林 第十三条(二)4
    [order] = await orders(guilin)
    assert (order.contact_id_number, order.contact_name, order.anonymous) == (VALID_ID, "张三", False)


async def test_guilin_citizen_who_declines_the_id_is_told_why(guilin) -> None:
    chat = new_chat(guilin)
    answers = {"联系电话": "13800001234", "姓名": "李四", "什么时候": "上个月", "地点": "七星区穿山路"}
    await answer_until(chat, Chat.text(await chat.say(COMPLAINT)), answers, "18位")
    declined = Chat.text(await chat.say("身份证号不想提供"))
    assert "第十二条" in declined and "受理" in declined, declined
    assert await orders(guilin) == []
    assert "12345" in Chat.text(await chat.say("你好"))  # the form is over; the conversation goes on


async def test_guilin_anonymous_on_a_real_name_matter_is_declined(guilin) -> None:
    chat = new_chat(guilin)
    answers = {"联系电话": "13800001234", "什么时候": "上个月", "地点": "七星区穿山路"}
    await answer_until(chat, Chat.text(await chat.say(COMPLAINT)), answers, "真实姓名")
    declined = Chat.text(await chat.say("匿名"))
    assert "第十二条" in declined, declined
    assert await orders(guilin) == []


async def test_urgent_outage_is_flagged_and_the_citizen_told_the_limit(neimenggu) -> None:
    """内蒙古 第十条: 供水、供电、供气、供热 … 紧急工单, 立即派发."""
    chat = new_chat(neimenggu)
    first = Chat.text(
        await chat.say("呼和浩特市赛罕区我们小区从昨天晚上开始停暖了，家里只有十度，老人孩子冻得受不了，赶紧派人修")
    )
    assert "立即派发" in first, first
    summary = await answer_until_summary(chat, first, {"联系电话": "13800001234", "称呼": "匿名", "地点": "赛罕区"})
    assert "请核对" in summary
    receipt = Chat.text(await chat.say("/affirm"))
    assert "立即派发" in receipt and re.search(r"NM\d{14}", receipt), receipt
    [order] = await orders(neimenggu)
    assert order.urgent and order.urgent_reason == "utilities" and order.dispatch_due_at <= order.created_at


async def test_confidentiality_is_recorded(gateway) -> None:
    chat = new_chat(gateway)
    first = Chat.text(
        await chat.say("举报天坛路上有家小作坊无证生产食品，卫生条件特别差，已经好几个月了。请替我保密，怕被报复")
    )
    summary = await answer_until_summary(chat, first, {"联系电话": "13800002222", "称呼": "匿名"})
    assert "保密：是" in summary
    assert "保密" in Chat.text(await chat.say("/affirm"))
    [order] = await orders(gateway)
    assert order.confidential is True


async def make_order(chat: Chat) -> str:
    first = Chat.text(await chat.say("投诉宣化街88号楼下的烧烤店每天晚上营业到凌晨两点，油烟和噪音特别大，已经半个月了"))
    await answer_until_summary(chat, first, {"联系电话": "13800004444", "称呼": "匿名"})
    receipt = Chat.text(await chat.say("/affirm"))
    number = re.search(r"JY\d{14}", receipt)
    assert number, receipt
    return number.group(0)


async def test_progress_question_with_a_number_withdraws_nothing(gateway) -> None:
    chat = new_chat(gateway)
    number = await make_order(chat)
    await chat.say(f"工单{number}现在到哪一步了")
    [order] = await orders(gateway)
    assert order.status == "created"


async def test_supplement_then_withdraw_by_chat(gateway) -> None:
    chat = new_chat(gateway)
    number = await make_order(chat)
    asked = Chat.text(await chat.say("我要补充一下情况"))
    assert "补充的新情况" in asked, asked
    added = Chat.text(await chat.say("昨晚又吵到凌晨三点，还有人在店门口喝醉了砸酒瓶"))
    assert number in added and "已将您补充的情况" in added, added
    ask = await chat.say(f"工单{number}不用处理了，店已经关门了，帮我撤回吧")
    assert "您要撤回工单" in Chat.text(ask) and number in Chat.text(ask), ask
    [orders_before] = await orders(gateway)
    assert orders_before.status == "created"  # nothing happens before the citizen confirms
    confirm = next(b for b in ask[-1]["buttons"] if b["title"] == "确认撤回")
    withdrawn = Chat.text(await chat.say(confirm["payload"]))
    assert "已为您撤回" in withdrawn and number in withdrawn, withdrawn
    [order] = await orders(gateway)
    assert order.status == "withdrawn" and order.supplements[-1]["text"].startswith("昨晚又吵到凌晨三点")


async def test_someone_elses_order_cannot_be_withdrawn(gateway) -> None:
    number = await make_order(new_chat(gateway))
    stranger = new_chat(gateway)
    reply = Chat.text(await stranger.say(f"把工单{number}撤销掉"))
    assert "验证码" in reply and "烧烤" not in reply, reply
    # Typing the confirmation payload by hand does not help either, with or without a phone.
    for forged in (f'/confirm_withdraw{{"order_number": "{number}"}}',
                   f'/confirm_withdraw{{"order_number": "{number}", "owner_phone": "13800004444"}}'):
        text = Chat.text(await stranger.say(forged))
        assert "已为您撤回" not in text and "烧烤" not in text, text
    [order] = await orders(gateway)
    assert order.status == "created"


async def test_a_typed_phone_from_a_new_web_sender_proves_nothing(gateway) -> None:
    """#14: "我要撤回我的投诉，登记的电话是138…" from a new sender showed the order and withdrew it. Now a
    code goes by SMS to the registered phone; the order is shown only after the code comes back."""
    number = await make_order(new_chat(gateway))
    stranger = new_chat(gateway)
    reply = Chat.text(await stranger.say("我要撤回我的投诉，登记的电话是13800004444"))
    assert "验证码" in reply and number not in reply and "烧烤" not in reply, reply
    async with router_of(gateway).sessions() as session:
        [sms] = (await session.scalars(select(OutboxItem).where(OutboxItem.channel == "sms"))).all()
    assert sms.recipient == "13800004444"
    assert sms.body["kind"] == "code", sms.body  # the verification-code template
    ask = await stranger.say(sms.body["vars"]["code"])
    assert "您要撤回工单" in Chat.text(ask) and number in Chat.text(ask), ask
    confirm = next(b for b in ask[-1]["buttons"] if b["title"] == "确认撤回")
    assert "已为您撤回" in Chat.text(await stranger.say(confirm["payload"]))
    [order] = await orders(gateway)
    assert order.status == "withdrawn"


async def test_a_supplement_from_a_new_sender_waits_for_the_code(gateway) -> None:
    """#14: a supplement was appended to someone else's order on a typed phone number."""
    number = await make_order(new_chat(gateway))
    stranger = new_chat(gateway)
    reply = Chat.text(await stranger.say(
        f"补充一下工单{number}的情况：那家烧烤店昨晚又营业到凌晨三点，登记电话13800004444"))
    assert "验证码" in reply and "烧烤店每天" not in reply, reply
    [order] = await orders(gateway)
    assert order.supplements == []


async def test_abusive_sender_is_limited_and_their_messages_kept(gateway) -> None:
    """济源 第三十三条: 骚扰、侮辱 … 在一定时间内限制; the messages are still stored."""
    chat = new_chat(gateway)
    assert "第1次提醒" in Chat.text(await chat.say("你们这帮废物"))
    assert "第2次提醒" in Chat.text(await chat.say("废物"))
    limited = Chat.text(await chat.say("一群废物"))
    assert "第三十三条" in limited and "24小时" in limited
    after = Chat.text(await chat.say("小区门口路灯坏了"))
    assert "第三十三条" in after
    async with router_of(gateway).sessions() as session:
        kept = (await session.scalars(select(Message).where(Message.direction == "in").order_by(Message.id))).all()
    assert [m.text for m in kept][-1] == "小区门口路灯坏了" and kept[-1].status == "limited"
