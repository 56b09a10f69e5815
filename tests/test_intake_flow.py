"""Whole conversations through the gateway's REST webhook, the real Rasa server and action server."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import func, select

from handoff.models import WorkOrder
from storage.conversations import Message
from tests.conftest import Chat, metrics, router_of

pytestmark = pytest.mark.rasa


def new_chat(gateway) -> Chat:  # noqa: ANN001
    return Chat(gateway, f"t-{uuid.uuid4().hex[:12]}")


async def work_orders(gateway) -> list[WorkOrder]:  # noqa: ANN001
    async with router_of(gateway).sessions() as session:
        return list((await session.scalars(select(WorkOrder))).all())


async def test_complaint_end_to_end(gateway) -> None:
    chat = new_chat(gateway)
    first = Chat.text(
        await chat.say("昨天晚上十点多，济源市天坛路和济源大道路口的烧烤店噪音太大，吵得根本睡不着，我要投诉")
    )
    assert "投诉" in first
    # Time and place were in the first message: only the phone is asked.
    assert "联系电话" in first and "什么时候" not in first and "具体地点" not in first
    assert "称呼" in Chat.text(await chat.say("我的手机是 138 0000 1234"))
    summary = await chat.say("匿名")
    text = Chat.text(summary)
    assert "天坛路" in text and "138****1234" in text and "13800001234" not in text
    assert [b["title"] for b in summary[-1]["buttons"]] == ["确认提交", "修改", "取消"]
    receipt = Chat.text(await chat.say("/affirm"))
    number = re.search(r"工单号：(JY\d{14})", receipt)
    assert number, receipt
    assert "7个工作日" in receipt

    orders = await work_orders(gateway)
    assert len(orders) == 1
    order = orders[0]
    assert (order.number, order.category, order.anonymous) == (number.group(1), "complaint", True)
    assert order.contact_phone == "13800001234" and order.contact_name is None
    assert "天坛路" in order.facts["place"]
    assert "昨天晚上" in order.facts["event_time"]
    assert any("烧烤店" in line["text"] for line in order.transcript)

    # The handling unit's API, behind the token.
    resp = await gateway.get(f"/api/tickets/{order.number}", headers={"Authorization": "Bearer test-token"})
    assert resp.status == 200
    body = await resp.json()
    assert body["category"] == "complaint" and body["limit_working_days"] == 7
    assert body["history"][0]["status"] == "created"
    assert (await gateway.get(f"/api/tickets/{order.number}")).status == 401
    assert (await gateway.get(f"/api/tickets/{order.number}", headers={"Authorization": "Bearer nope"})).status == 401
    assert (
        await gateway.get("/api/tickets/JY00000000000000", headers={"Authorization": "Bearer test-token"})
    ).status == 404

    # The operators' metrics, behind the same token: four turns, one work order, the bot's share of
    # the turns, and nothing that names the citizen.
    assert (await gateway.get("/metrics")).status == 401
    m = await metrics(gateway)
    web = (("channel", "web"),)
    assert m[("hotline_inbound_messages_total", web)] == 4
    assert m[("hotline_turn_seconds_count", web)] == 4 and m[("hotline_bot_seconds_count", ())] == 4
    assert 0 < m[("hotline_bot_seconds_sum", ())] < m[("hotline_turn_seconds_sum", web)]
    created = (("category", "complaint"), ("outcome", "created"), ("profile", "jiyuan"))
    assert m[("hotline_work_orders_total", created)] == 1
    body = await (await gateway.get("/metrics", headers={"Authorization": "Bearer test-token"})).text()
    assert "13800001234" not in body and chat.sender not in body


async def test_help_asks_only_what_is_missing_and_revalidates(gateway) -> None:
    chat = new_chat(gateway)
    text = Chat.text(await chat.say("我们小区门口的路灯坏了好几个星期了，晚上黑乎乎的老人孩子出门很不方便"))
    assert "求助" in text and "具体地点" in text
    assert "什么时候" not in text  # 好几个星期 is already a time
    assert "联系电话" in Chat.text(await chat.say("沁园街道御龙湾小区北门"))
    assert "不正确" in Chat.text(await chat.say("12345"))
    assert "称呼" in Chat.text(await chat.say("13800005678"))
    summary = Chat.text(await chat.say("我姓王"))
    assert "御龙湾小区北门" in summary and "王" in summary


async def test_correction_and_cancel(gateway) -> None:
    chat = new_chat(gateway)
    await chat.say("举报天坛路上有家小作坊无证生产食品，卫生条件特别差，已经好几个月了")
    await chat.say("13800002222")
    await chat.say("匿名")
    corrected = Chat.text(await chat.say("电话号码错了，应该是13800003333"))
    assert "138****3333" in corrected
    asked = await chat.say("/correct")
    assert "修改哪一项" in Chat.text(asked)
    place = Chat.text(await chat.say('/correct{"field":"place"}'))
    assert "具体地点" in place
    assert "济源大道东段" in Chat.text(await chat.say("济源大道东段菜市场后面"))
    assert "已取消" in Chat.text(await chat.say("算了不反映了"))
    assert await work_orders(gateway) == []


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("我家楼下的下水井盖被压碎了一半，晚上走路很危险，麻烦派人来换一个", "求助"),
        ("建议在济源大道与天坛路路口增设一个行人过街天桥，早晚高峰过马路太危险了", "意见建议"),
        ("举报黄河大道边上有个废品收购站晚上偷偷焚烧垃圾，味道呛人", "举报"),
    ],
)
async def test_request_kinds(gateway, text: str, label: str) -> None:
    # The classification itself, not a word the greeting also contains.
    assert f"您的诉求属于“{label}”类" in Chat.text(await new_chat(gateway).say(text))


async def test_consultation_answered_from_knowledge_base(gateway) -> None:
    reply = Chat.text(await new_chat(gateway).say("请问社保断缴了三个月还能补缴吗"))
    assert "12333" in reply and "工单" not in reply


async def test_praise_becomes_a_work_order_for_the_unit_praised(gateway) -> None:
    chat = new_chat(gateway)
    first = Chat.text(await chat.say("表扬一下沁园街道的网格员小李，上次帮我家老人办低保跑前跑后特别耐心"))
    assert "您的诉求属于“表扬”类" in first
    assert "什么时候" not in first and "具体地点" not in first  # praise needs no when or where
    assert "称呼" in Chat.text(await chat.say("13800004444"))
    assert "称呼" in Chat.text(await chat.say("确认提交"))  # a button title is not a name: asked again
    summary = Chat.text(await chat.say("李女士"))
    assert "李女士" in summary and "确认提交" not in summary.split("称呼：")[1].split("\n")[0]
    receipt = Chat.text(await chat.say("/affirm"))
    assert re.search(r"工单号：JY\d{14}", receipt), receipt
    [order] = await work_orders(gateway)
    assert order.category == "praise" and order.contact_name == "李女士" and "网格员" in order.facts["content"]


@pytest.mark.parametrize(
    ("text", "reason", "expect"),
    [
        ("救命啊我家厨房着火了烟好大", "emergency", "119"),
        ("我妈突然晕倒了叫不醒怎么办", "emergency", "120"),
        ("我和前夫的离婚官司法院已经立案了，下个月开庭，你们能不能帮我跟法官说说", "legal_procedure", "法院"),
        ("我要举报我们镇的一个副镇长收受贿赂，帮人拿工程", "outside_authority", "12388"),
        ("帮我查一下我前女友现在住哪里，她电话换了", "confidential", "隐私"),
        ("我借给朋友五万块钱，写了借条，他一直拖着不还，你们帮我要回来", "civil_dispute", "调解"),
        ("你们这群废物", "no_substance", "具体诉求"),
        ("郑州市金水区有个工地天天晚上施工", "out_of_jurisdiction", "当地"),
    ],
)
async def test_screened_kinds(gateway, text: str, reason: str, expect: str) -> None:
    chat = new_chat(gateway)
    reply = Chat.text(await chat.say(text))
    assert expect in reply, reply
    assert "联系电话" not in reply and "什么时候" not in reply  # never enters the form
    async with router_of(gateway).sessions() as session:
        inbound = await session.scalar(select(Message).where(Message.direction == "in").order_by(Message.id.desc()))
    assert inbound.payload["bot"][0]["screened"]["reason"] == reason


async def test_emergency_in_the_middle_of_a_form_stops_it(gateway) -> None:
    chat = new_chat(gateway)
    assert "联系电话" in Chat.text(await chat.say("投诉天坛路有家饭店每天把油烟直接排到我家窗户，已经一个月了"))
    reply = Chat.text(await chat.say("不好了楼下饭店着火了"))
    assert "119" in reply
    assert "称呼" not in Chat.text(await chat.say("13800001234"))  # the form is over
    assert await work_orders(gateway) == []


async def test_greeting_and_human_handoff(gateway) -> None:
    chat = new_chat(gateway)
    assert "12345" in Chat.text(await chat.say("你好"))
    handoff = Chat.text(await chat.say("转人工"))
    # Nobody is online here: a callback order rather than a wait (tests/test_queue.py has the queue).
    assert "转接人工客服" in handoff and "回拨工单" in handoff


async def test_duplicate_message_id_is_processed_once(gateway) -> None:
    chat = new_chat(gateway)
    first = await chat.say("建议在宣化街多设几个垃圾桶，现在走很远都找不到", message_id="dup-1")
    again = await chat.say("建议在宣化街多设几个垃圾桶，现在走很远都找不到", message_id="dup-1")
    assert first == again
    async with router_of(gateway).sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Message).where(Message.provider_message_id == "dup-1")
        )
    assert count == 1


async def test_a_first_message_with_every_fact_is_confirmed_within_three_turns(gateway) -> None:
    chat = new_chat(gateway)
    first = Chat.text(await chat.say(
        "我要投诉，昨天晚上十一点多，济源市沁园路和天坛路交叉口那家KTV音响开得震天响，吵得整栋楼睡不着，我电话13800005555"
    ))
    assert "您的诉求属于“投诉”类" in first and "称呼" in first  # time, place and phone were in the message
    assert "请核对" in Chat.text(await chat.say("王先生"))
    receipt = Chat.text(await chat.say("确认提交"))
    assert re.search(r"工单号：JY\d{14}", receipt), receipt
    [order] = await work_orders(gateway)
    assert order.contact_phone == "13800005555" and "沁园路" in order.facts["place"]


async def test_the_bot_never_asks_twice_for_what_was_already_described(gateway) -> None:
    chat = new_chat(gateway)
    assert "请直接描述" in Chat.text(await chat.say("在吗"))
    assert "请直接描述" in Chat.text(await chat.say("你好"))  # small talk, still no request
    again = Chat.text(await chat.say("路灯坏了"))  # short, but it is the request: taken, not asked again
    assert "请直接描述" not in again and "您的诉求属于" in again


async def test_an_unclear_danger_is_referred_at_once_and_the_citizen_can_say_it_is_past(gateway) -> None:
    chat = new_chat(gateway)
    asked = Chat.text(await chat.say("我们小区物业的保安打人"))
    assert "110" in asked and "现在是否正在发生" in asked
    answer = Chat.text(await chat.say("不是，上个月的事了，想问问物业当时为什么不管"))
    assert "您的诉求属于" in answer and "110" not in answer
    m = await metrics(gateway)  # the referral is counted for operators
    assert m[("hotline_screened_total", (("profile", "jiyuan"), ("reason", "emergency")))] == 1
