"""What agents do with a held chat (transfer, the order, the phone, quick replies), and nobody waits
forever: callback orders out of hours, with nobody online and past the wait limit (simulated clock),
the bot's own reasons to call a person, the supervisor's numbers and the lockout behind a proxy."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from common.china_time import CHINA_TZ
from common.messages import Reply
from gateway import waiting
from gateway.botproc import free_port
from handoff import agents
from handoff.agents import AgentAudit
from handoff.models import WorkOrder, WorkOrderEvent
from handoff.workorders import create_from_intake
from profiles import load as load_profile
from storage.base import utcnow
from storage.conversations import Conversation, Message
from storage.db import make_engine, make_sessions
from tests.conftest import Chat, gateway_client, router_of, settings_for

PASSWORD = "correct horse battery"


class Clock:
    """The app's time, moved by the test."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def desk(tmp_path: Path, clock: Clock) -> AsyncIterator[TestClient]:
    """A gateway on the test's clock, its bot unreachable (none of this needs it), no timer loops."""
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", console_secret="queue-test")
    async with gateway_client(settings, clock, background=False) as client:
        for name, role in (("张伟", "agent"), ("李娜", "agent"), ("王芳", "supervisor")):
            await agents.add(router_of(client).sessions, name, PASSWORD, role)
        yield client


async def login(client: TestClient, name: str, **headers: str) -> dict[str, str]:
    resp = await client.post("/console/api/login", json={"name": name, "password": PASSWORD}, headers=headers)
    assert resp.status == 200, await resp.text()
    return {"X-CSRF-Token": (await resp.json())["csrf"]}


async def waiting_since(client: TestClient, sender: str, since: dt.datetime, channel: str = "web") -> int:
    async with router_of(client).sessions() as session:
        conv = Conversation(channel=channel, sender_id=sender, profile="jiyuan", state="waiting", waiting_since=since)
        session.add(conv)
        await session.commit()
        return conv.id


async def said_to(client: TestClient, conv_id: int) -> list[str]:
    async with router_of(client).sessions() as session:
        return list(await session.scalars(select(Message.text).where(
            Message.conversation_id == conv_id, Message.direction == "out").order_by(Message.id)))


async def state_of(client: TestClient, conv_id: int) -> tuple[str, int | None]:
    async with router_of(client).sessions() as session:
        conv = await session.get(Conversation, conv_id)
        assert conv is not None
        return conv.state, conv.agent_id


async def test_an_agent_transfers_to_a_colleague_and_the_colleague_back_to_the_queue(desk: TestClient,
                                                                                     clock: Clock) -> None:
    zhang = await login(desk, "张伟")
    conv_id = await waiting_since(desk, "transfer-citizen", clock.now)
    url = f"/console/api/conversations/{conv_id}"
    assert (await desk.post(f"{url}/claim", headers=zhang)).status == 200
    unknown = await desk.post(f"{url}/transfer", json={"to": "nobody"}, headers=zhang)
    assert unknown.status == 409 and "nobody" in (await unknown.json())["error"]
    moved = await desk.post(f"{url}/transfer", json={"to": "李娜"}, headers=zhang)
    assert moved.status == 200 and (await moved.json())["state"] == "with_agent"
    li = await agents.listing(router_of(desk).sessions)
    assert await state_of(desk, conv_id) == ("with_agent", next(a.id for a in li if a.name == "李娜"))
    # 张伟 no longer holds it: his words do not reach the citizen
    assert (await desk.post(f"{url}/messages", json={"text": "还在吗"}, headers=zhang)).status == 409
    li_headers = await login(desk, "李娜")  # the same client: now 李娜's session
    assert (await desk.post(f"{url}/claim", headers=li_headers)).status == 200  # already hers
    back = await desk.post(f"{url}/transfer", json={"to": "queue"}, headers=li_headers)
    assert (await back.json())["state"] == "waiting"
    assert await state_of(desk, conv_id) == ("waiting", None)
    queue = (await (await desk.get("/console/api/queue")).json())["waiting"]
    assert [w["conversation_id"] for w in queue] == [conv_id]
    told = await said_to(desk, conv_id)
    assert told[-2] == "正在为您转接其他人工客服，请稍候。" and "第1位" in told[-1] and "预计等待约" in told[-1]
    async with router_of(desk).sessions() as session:
        transfers = list(await session.scalars(select(AgentAudit.detail).where(AgentAudit.action == "transfer")))
    assert transfers == [{"to": "李娜"}, {"to": "queue"}]


async def test_the_phone_is_masked_until_revealed_and_every_reveal_is_audited(desk: TestClient, clock: Clock) -> None:
    zhang = await login(desk, "张伟")
    conv_id = await waiting_since(desk, "13812345678", clock.now, channel="sms")
    url = f"/console/api/conversations/{conv_id}"
    assert (await desk.post(f"{url}/phone", headers=zhang)).status == 409  # not his chat
    await desk.post(f"{url}/claim", headers=zhang)
    shown = await (await desk.get(url)).json()
    assert shown["facts"]["phone"] == "138****5678" and "13812345678" not in str(shown)
    revealed = await desk.post(f"{url}/phone", headers=zhang)
    assert (await revealed.json()) == {"phone": "13812345678"}
    async with router_of(desk).sessions() as session:
        rows = (await session.execute(select(AgentAudit.agent_name, AgentAudit.conversation_id)
                                      .where(AgentAudit.action == "reveal_phone"))).all()
    assert [tuple(r) for r in rows] == [("张伟", conv_id)]


async def test_an_open_console_socket_keeps_its_agent_online_without_polling(tmp_path: Path, clock: Clock) -> None:
    """The page no longer polls the queue: its socket alone says the agent is there."""
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", console_secret="queue-test",
                            console_seen_s=0.1)
    async with gateway_client(settings, clock, background=False) as client:
        await agents.add(router_of(client).sessions, "张伟", PASSWORD, "agent")
        await login(client, "张伟")
        ws = await client.ws_connect("/console/ws")
        clock.now += dt.timedelta(minutes=5)  # far past agents.ONLINE_WITHIN since the login
        for _ in range(50):
            if (await agents.presence(router_of(client).sessions, clock())).online == ["张伟"]:
                break
            await asyncio.sleep(0.05)
        assert (await agents.presence(router_of(client).sessions, clock())).online == ["张伟"]
        await ws.close()


async def test_quick_replies_come_from_the_profiles_knowledge_base(desk: TestClient) -> None:
    await login(desk, "张伟")
    replies = (await (await desk.get("/console/api/quick-replies", params={"q": "怎么查社保缴费记录"})).json())["replies"]
    assert replies[0]["id"] == "social_security_query" and "社保" in replies[0]["answer"]
    # One keyword each for 参保 (enrolment) and 参保证明 (the record): the closer phrasing decides, as in the bot.
    for asked, best in (("参保证明去哪开", "social_security_query"), ("房子过户了水电燃气怎么改名", "utilities_payment")):
        ranked = (await (await desk.get("/console/api/quick-replies", params={"q": asked})).json())["replies"]
        assert ranked[0]["id"] == best
    guilin = (await (await desk.get("/console/api/quick-replies", params={"profile": "guilin"})).json())["replies"]
    assert guilin and any("桂林" in r["answer"] for r in guilin)


async def test_the_sweep_files_callback_orders_past_the_wait_limit_including_old_stuck_ones(
    desk: TestClient, clock: Clock
) -> None:
    start = clock.now
    stuck = await waiting_since(desk, "stuck-before-the-queue", start - dt.timedelta(days=3))  # from 0006's migration
    late = await waiting_since(desk, "late-citizen", start)
    await login(desk, "张伟")
    router = router_of(desk)
    assert await router.waiting.sweep() == 1  # an agent is online and it is in hours: only the stuck one
    clock.now = start + dt.timedelta(minutes=9)
    fresh = await waiting_since(desk, "fresh-citizen", clock.now)
    await desk.get("/console/api/queue")  # the agent's console still polls: online at the simulated time
    assert await router.waiting.sweep() == 0
    clock.now = start + dt.timedelta(minutes=10, seconds=30)
    await desk.get("/console/api/queue")
    assert await router.waiting.sweep() == 1  # past the 10 minutes of jiyuan's human_service
    assert [(await state_of(desk, c))[0] for c in (stuck, late, fresh)] == ["bot", "bot", "waiting"]
    async with router.sessions() as session:
        orders = {o.conversation_id: o for o in await session.scalars(select(WorkOrder))}
    assert set(orders) == {stuck, late}
    assert orders[late].facts["callback"] == "wait" and orders[late].category == "help"
    told = (await said_to(desk, late))[-1]
    assert orders[late].number in told and "回拨工单" in told and "等待较长时间" in told
    assert await router.waiting.sweep() == 0  # filed once


async def test_nobody_online_or_out_of_hours_means_a_callback_order_at_once(desk: TestClient, clock: Clock) -> None:
    router = router_of(desk)
    jiyuan = load_profile("jiyuan")
    day_shift = dataclasses.replace(jiyuan, human_service=dataclasses.replace(
        jiyuan.human_service, hours=((8 * 60, 20 * 60),)))
    night = dt.datetime(2026, 11, 28, 23, 30, tzinfo=CHINA_TZ)
    noon = dt.datetime(2026, 11, 28, 12, 0, tzinfo=CHINA_TZ)
    assert await router.waiting.closed_reason(day_shift, noon) == "nobody"
    await login(desk, "张伟")
    clock.now = noon
    await desk.get("/console/api/queue")
    assert await router.waiting.closed_reason(day_shift, noon) is None
    assert await router.waiting.closed_reason(day_shift, night) == "hours"
    router.profile = day_shift  # the gateway serves the day-shift profile now
    clock.now = night
    conv_id = await waiting_since(desk, "night-citizen", night - dt.timedelta(minutes=1))
    assert await router.waiting.sweep() == 1
    told = (await said_to(desk, conv_id))[-1]
    assert told.startswith("目前不在人工客服服务时间，已为您登记回拨工单")


def test_the_sweep_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "HOTLINE_DATABASE_URL": url, "HOTLINE_RASA_URL": f"http://127.0.0.1:{free_port()}"}
    hotline = [sys.executable, "-m", "gateway.cli", "agents"]
    subprocess.run([*hotline, "list"], env=env, check=True, capture_output=True)  # creates the schema

    async def stuck() -> None:
        engine = make_engine(url)
        async with make_sessions(engine)() as session:
            session.add(Conversation(channel="sms", sender_id="13900001111", profile="jiyuan", state="waiting",
                                     waiting_since=utcnow() - dt.timedelta(hours=5)))
            await session.commit()
        await engine.dispose()

    async def filed() -> WorkOrder | None:
        engine = make_engine(url)
        async with make_sessions(engine)() as session:
            order = await session.scalar(select(WorkOrder))
        await engine.dispose()
        return order

    asyncio.run(stuck())
    at = (utcnow() - dt.timedelta(seconds=1)).isoformat()
    done = subprocess.run([*hotline, "sweep", "--at", at], env=env, capture_output=True, text=True, check=True)
    assert '"callbacks": 1' in done.stdout
    order = asyncio.run(filed())
    assert order is not None and order.contact_phone == "13900001111" and order.facts["callback"] == "nobody"


def turn(direction: str, text: str, id_: int, reply_to: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(id=id_, direction=direction, text=text, reply_to=reply_to)


def test_the_bot_hands_over_when_it_failed_twice_or_the_citizen_is_stuck_or_angry() -> None:
    profile = load_profile("jiyuan")
    failed = sorted(waiting.failure_texts())
    assert any("没有理解" in t for t in failed)  # read from the bot's domain, utter_default
    once = [turn("out", failed[0], 2, 1), turn("in", "嗯嗯嗯嗯", 1)][::1]
    assert waiting.trigger(profile, "啊啊啊啊", [Reply(failed[0])], once) == "bot_failed_twice"
    assert waiting.trigger(profile, "啊啊啊啊", [Reply("请问路灯在哪条街？")], once) is None  # it understood now
    answered = [turn("out", "请问在什么地方？", 2, 1), turn("in", "路灯坏了好几天", 1)]
    assert waiting.trigger(profile, "路灯坏了好几天", [Reply("请问在什么地方？")], answered) == "loop"
    assert waiting.trigger(profile, "路灯坏了好几天", [Reply("好的，已记录")], answered) is None
    assert waiting.trigger(profile, "好", [Reply("请问在什么地方？")], [turn("out", "请问在什么地方？", 2, 1),
                                                                     turn("in", "好", 1)]) is None
    assert waiting.trigger(profile, "你们这个破机器人根本听不懂", [Reply("x")], []) == "angry"


@pytest.mark.rasa
async def test_the_real_bot_hands_an_angry_citizen_to_a_person_and_without_agents_files_a_callback(
    gateway: TestClient,
) -> None:
    sessions = router_of(gateway).sessions
    alone = Chat.text(await Chat(gateway, "nobody-online").say("转人工"))
    assert "目前暂无人工客服在线，已为您登记回拨工单，工单号：" in alone
    async with sessions() as session:
        order = await session.scalar(select(WorkOrder))
    assert order is not None and order.number in alone and order.facts["callback"] == "nobody"
    assert [line["text"] for line in order.transcript][:1] == ["转人工"]  # the transcript goes with it
    angry_words = "路灯坏了我都说了好几遍了，气死我了"  # a complaint to the bot, not a request for a person
    unheard = Chat.text(await Chat(gateway, "angry-at-night").say(angry_words))
    assert "转接" not in unheard and "回拨" not in unheard  # nobody to hand to: the bot carries on
    await agents.add(sessions, "张伟", PASSWORD, "agent")
    await login(gateway, "张伟")
    angry = Chat.text(await Chat(gateway, "angry-citizen").say(angry_words))
    assert waiting.TRIGGER_TEXT in angry and "第1位" in angry  # the gateway decided, not the NLU
    lost = Chat(gateway, "lost-citizen")
    first = Chat.text(await lost.say("是的"))  # yes, to nothing: the bot asks for the request
    assert "请直接描述您要反映的事项" in first and "转接" not in first
    second = Chat.text(await lost.say("对的"))
    assert "请直接描述您要反映的事项" in second and "正在为您转接人工客服" in second and "第2位" in second
    queue = (await (await gateway.get("/console/api/queue")).json())["waiting"]
    assert len(queue) == 2


async def test_the_supervisor_sees_the_hotline_at_a_glance(desk: TestClient, clock: Clock) -> None:
    router = router_of(desk)
    zhang = await login(desk, "张伟")
    assert (await desk.get("/console/api/supervisor")).status == 403  # agents do not
    held = await waiting_since(desk, "held-citizen", clock.now - dt.timedelta(minutes=2))
    await desk.post(f"/console/api/conversations/{held}/claim", headers=zhang)
    await waiting_since(desk, "waiting-citizen", clock.now - dt.timedelta(minutes=3))
    profile = load_profile("jiyuan")
    for i, kind in enumerate(("complaint", "complaint", "consult")):
        intake = {"intake_id": f"sup-{i}", "category": kind, "content": f"第{i}件事", "phone": None}
        await create_from_intake(router.sessions, intake, profile, channel="web", conversation_id=held,  # type: ignore[arg-type]
                                 now=clock.now - dt.timedelta(days=2))
    async with router.sessions() as session:
        first = await session.scalar(select(WorkOrder).where(WorkOrder.intake_id == "sup-0"))
        assert first is not None
        session.add(WorkOrderEvent(work_order_id=first.id, status="dispatched", at=first.created_at))
        await session.commit()
    await login(desk, "王芳")
    stats = await (await desk.get("/console/api/supervisor")).json()
    assert stats["live"]["online"] == ["张伟", "王芳"] and stats["live"]["busy"] == ["张伟"]
    assert stats["live"]["queue"] == 1 and stats["live"]["longest_wait_s"] == 180
    month = stats["days30"]
    assert month["request_kinds"] == {"complaint": 2, "consult": 1}
    assert month["work_orders_by_status"] == {"created": 3} and month["conversations_by_channel"] == {"web": 2}
    assert month["response_rate"] == pytest.approx(1 / 3, abs=1e-3)  # one of three dispatched within the deadline
    assert stats["today"]["request_kinds"] == {}
    assert sum(stats["daily"]["work_orders"]) == 3 and len(stats["daily"]["days"]) == 30
    other = await (await desk.get("/console/api/supervisor", params={"profile": "guilin"})).json()
    assert other["profile"]["id"] == "guilin" and other["days30"]["request_kinds"] == {}


async def test_queue_and_human_times_reach_prometheus(desk: TestClient, clock: Clock) -> None:
    zhang = await login(desk, "张伟")
    conv_id = await waiting_since(desk, "metrics-citizen", clock.now - dt.timedelta(seconds=45))
    await waiting_since(desk, "metrics-other", clock.now)
    await router_of(desk).waiting.sweep()
    await desk.post(f"/console/api/conversations/{conv_id}/claim", headers=zhang)
    await desk.post(f"/console/api/conversations/{conv_id}/close", headers=zhang)
    text = await (await desk.get("/metrics", headers={"Authorization": "Bearer test-token"})).text()
    assert "hotline_queue_length 2.0" in text
    assert "hotline_queue_wait_seconds_count 1.0" in text and 'hotline_queue_wait_seconds_bucket{le="60.0"} 1.0' in text
    assert "hotline_handle_seconds_count 1.0" in text


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
async def test_the_lockout_counts_the_client_behind_a_trusted_proxy_only(tmp_path: Path, trusted: str) -> None:
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", trusted_proxies=trusted)
    async with gateway_client(settings, background=False) as client:
        await agents.add(router_of(client).sessions, "张伟", PASSWORD, "agent")
        for i in range(agents.LOCKOUT_FAILURES):
            resp = await client.post("/console/api/login", json={"name": f"guess{i}", "password": "wrong password"},
                                     headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9"})
            assert resp.status == 401
        other_client = await client.post("/console/api/login", json={"name": "张伟", "password": PASSWORD},
                                         headers={"X-Forwarded-For": "203.0.113.10"})
        async with router_of(client).sessions() as session:
            addresses = set(await session.scalars(select(AgentAudit.address).where(AgentAudit.action == "login_failed")))
    if trusted:  # the proxy's word is taken: the guessing client is locked out, not everyone behind the proxy
        assert addresses == {"203.0.113.9"} and other_client.status == 200
    else:  # anyone can send the header: it is ignored and the peer itself is counted
        assert addresses == {"127.0.0.1"} and other_client.status == 401
