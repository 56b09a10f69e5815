"""Agents in Debian's chromium: the citizen's page and the console in separate browser contexts.

- a citizen asks for a person, an agent claims, messages flow both ways live, the agent files the
  order and releases the chat to the bot; a supervisor looks at the hotline (screenshots, see SHOTS);
- two agents on two gateway replicas over PostgreSQL click "接入" at once: exactly one wins;
- nobody claims within the profile's limit (simulated clock): a callback order, told to the citizen live.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy import select

from gateway.app import ROUTER, create_app
from gateway.botproc import free_port
from gateway.config import ROOT, Settings
from handoff import agents
from handoff.models import Survey, WorkOrder, WorkOrderEvent
from handoff.workorders import create_from_intake
from profiles import load as load_profile
from storage.base import utcnow
from storage.conversations import Conversation, Message
from tests.conftest import settings_for
from tests.test_agents import database
from tests.test_browser import ARGS, CHROMIUM

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"
# The screenshots in docs/img/ are refreshed on purpose (HOTLINE_SCREENSHOTS=docs/img); a normal run
# leaves the tracked files alone and writes beside the test logs.
SHOTS = ROOT / os.environ.get("HOTLINE_SCREENSHOTS", "var/test-logs")


@contextlib.asynccontextmanager
async def served(settings: Settings, clock: Callable[[], dt.datetime] | None = None,
                 background: bool = True) -> AsyncIterator[tuple[web.Application, str]]:
    app = create_app(settings, background=background, **({"clock": clock} if clock else {}))
    runner = web.AppRunner(app)
    await runner.setup()
    port = settings.port
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - a one-off check before anything starts
        pytest.fail("Debian chromium is missing: `make test` installs it")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def console_login(browser: Browser, base: str, name: str, *, timers_paused: bool = False) -> Page:
    """`timers_paused`: the page's clock stands still after login, so no poll can run (only what
    the gateway pushes shows up) until the test calls `page.clock.resume()`."""
    page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
    if timers_paused:
        await page.clock.install()
    await page.goto(f"{base}/console/")
    assert page.url.endswith("/console/login")  # no session: the login form
    await page.fill("#name", name)
    await page.fill("#password", PASSWORD)
    await page.get_by_role("button", name="登录").click()
    await expect(page.locator("#who")).to_contain_text(name)
    if timers_paused:
        await page.clock.pause_at(await page.evaluate("Date.now()") + 10)
    return page


class Citizen:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.bots = page.locator(".msg.bot")

    @classmethod
    async def open(cls, browser: Browser, base: str) -> Citizen:
        page = await (await browser.new_context()).new_page()
        await page.goto(f"{base}/")
        citizen = cls(page)
        await expect(citizen.bots.first).to_contain_text("12345")
        return citizen

    async def says(self, text: str) -> None:
        await self.page.fill("#input", text)
        await self.page.keyboard.press("Enter")


async def seed_for_the_supervisor(app: web.Application) -> None:
    """A month of a small hotline, so the supervisor's charts have something to show."""
    sessions = app[ROUTER].sessions
    profile = load_profile("jiyuan")
    now = utcnow()
    kinds = ["complaint", "help", "consult", "complaint", "report", "suggestion", "help", "complaint"]
    async with sessions() as session:
        for i in range(24):
            session.add(Conversation(channel=("web", "wechat:mini", "sms")[i % 3], sender_id=f"seed-{i}",
                                     profile="jiyuan", created_at=now - dt.timedelta(days=i % 20, hours=i)))
        await session.commit()
        seeded = list(await session.scalars(select(Conversation.id).where(Conversation.sender_id.like("seed-%"))))
        for i, reason in enumerate(("emergency", "civil_dispute", "legal_procedure", "civil_dispute", "no_substance")):
            session.add(Message(conversation_id=seeded[i], direction="in", text="（样例）", status="done",
                                payload={"bot": [{"screened": {"reason": reason}}]}))
        await session.commit()
    for i, kind in enumerate(kinds * 2):
        intake = {"intake_id": f"seed-{i}", "category": kind, "content": f"样例诉求{i}：小区路灯、噪音、垃圾清运等",
                  "phone": None}
        created = now - dt.timedelta(days=(i * 3) % 25)
        await create_from_intake(sessions, intake, profile, channel="web", conversation_id=None,  # type: ignore[arg-type]
                                 now=created)
        async with sessions() as session:
            order = await session.scalar(select(WorkOrder).where(WorkOrder.intake_id == f"seed-{i}"))
            assert order is not None
            if i % 4:  # three in four dispatched within the deadline
                order.status = "dispatched"
                session.add(WorkOrderEvent(work_order_id=order.id, status="dispatched", at=created + dt.timedelta(hours=1)))
            if i % 3 == 0:  # a third replied in time, rated by the citizen
                order.status = "replied"
                session.add(WorkOrderEvent(work_order_id=order.id, status="replied", at=created + dt.timedelta(days=2)))
                session.add(Survey(work_order_id=order.id, phone="-", status="answered", send_at=created,
                                   rating="unsatisfied" if i == 6 else "satisfied", rated_at=created + dt.timedelta(days=3)))
            await session.commit()


@pytest.mark.rasa
async def test_an_agent_takes_a_web_chat_files_the_order_and_a_supervisor_looks_on(
    tmp_path: Path, rasa_url: str
) -> None:
    settings = settings_for(tmp_path, rasa_url, port=free_port(), console_secret="browser-test")
    async with served(settings) as (app, base), chromium() as browser:
        for name, role in (("张伟", "agent"), ("王芳", "supervisor")):
            await agents.add(app[ROUTER].sessions, name, PASSWORD, role)
        # An agent is online: the citizen queues. The console's timers stand still: the queue row
        # can only come from the gateway's push, not from a poll.
        agent = await console_login(browser, base, "张伟", timers_paused=True)
        citizen = await Citizen.open(browser, base)
        await citizen.says("转人工")
        await expect(citizen.bots.last).to_contain_text("第1位", timeout=30_000)
        await expect(citizen.bots.last).to_contain_text("预计等待约")

        item = agent.locator("#waiting .item")
        await expect(item).to_contain_text("网页", timeout=10_000)
        await agent.clock.resume()
        await item.get_by_role("button", name="接入").click()
        transcript = agent.locator("#transcript")
        await expect(transcript.locator(".msg.citizen").first).to_have_text("市民转人工")
        await expect(citizen.bots.last).to_have_text("人工客服已接入，请直接说明您的问题。", timeout=10_000)

        to_agent: list[float] = []
        to_citizen: list[float] = []
        for i, (said, answer) in enumerate((("我家楼下路灯坏了一个星期了", "好的，请问是哪条街？"),
                                            ("宣化街和天坛路路口", "请问大概从什么时候开始的？"),
                                            ("上周一晚上开始不亮", "好的，马上为您登记工单。"))):
            started = time.perf_counter()
            await citizen.says(said)
            await expect(transcript.locator(".msg.citizen").last).to_have_text("市民" + said, timeout=10_000)
            to_agent.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await agent.fill("#reply", answer)
            await agent.keyboard.press("Enter")
            await expect(citizen.bots.last).to_have_text(answer, timeout=10_000)
            to_citizen.append((time.perf_counter() - started) * 1000)
            assert i < 3
        print(f"\nrelay in chromium, ms: citizen→agent {statistics.median(to_agent):.0f} (median of 3), "
              f"agent→citizen {statistics.median(to_citizen):.0f}")

        await expect(agent.locator("#quick div").first).to_be_visible()  # knowledge-base quick replies
        await agent.select_option("#o-kind", "help")
        await agent.fill("#o-content", "宣化街和天坛路路口路灯自上周一晚上起不亮")
        await agent.fill("#o-place", "宣化街和天坛路路口")
        await agent.fill("#o-event_time", "上周一晚上")
        await agent.get_by_role("button", name="提交工单").click()
        await expect(agent.locator("#order-number")).to_contain_text("工单号：JY", timeout=10_000)
        number = (await agent.locator("#order-number").text_content() or "").split("：")[-1]
        await expect(citizen.bots.last).to_contain_text(number, timeout=10_000)
        async with app[ROUTER].sessions() as session:
            order = await session.scalar(select(WorkOrder).where(WorkOrder.number == number))
        assert order is not None and order.facts["place"] == "宣化街和天坛路路口"
        assert [line["from"] for line in order.transcript][:2] == ["citizen", "bot"]
        assert "agent" in {line["from"] for line in order.transcript}
        SHOTS.mkdir(parents=True, exist_ok=True)
        await agent.screenshot(path=str(SHOTS / "console.png"), full_page=True)

        await agent.get_by_role("button", name="交还智能客服").click()
        await expect(citizen.bots.last).to_contain_text("智能客服继续为您服务", timeout=10_000)
        await citizen.says("你好")
        await expect(citizen.bots.last).to_contain_text("12345", timeout=30_000)  # the bot answers again

        await seed_for_the_supervisor(app)
        supervisor = await console_login(browser, base, "王芳")
        await supervisor.get_by_role("button", name="值班长视图").click()
        await expect(supervisor.locator("#b-online")).to_have_text("2", timeout=10_000)
        await expect(supervisor.locator("#c-kinds canvas")).to_have_count(1, timeout=10_000)
        await expect(supervisor.locator("#c-rates canvas")).to_have_count(1)
        await supervisor.wait_for_timeout(1500)  # ECharts' entry animation
        await supervisor.screenshot(path=str(SHOTS / "supervisor.png"), full_page=True)


async def test_two_agents_click_claim_at_once_on_two_replicas_over_postgresql(tmp_path: Path) -> None:
    offline = f"http://127.0.0.1:{free_port()}"  # while a person holds a chat the bot is not asked
    with database("postgresql", tmp_path) as url:
        one = settings_for(tmp_path, offline, database_url=url, console_secret="shared", port=free_port())
        two = settings_for(tmp_path, offline, database_url=url, console_secret="shared", port=free_port())
        async with served(one) as (app, base_one), served(two) as (app_two, base_two), chromium() as browser:
            for name in ("张伟", "李娜"):
                await agents.add(app[ROUTER].sessions, name, PASSWORD, "agent")
            pages = [await console_login(browser, base_one, "张伟"), await console_login(browser, base_two, "李娜")]
            timings: list[float] = []
            for round_ in range(3):
                async with app[ROUTER].sessions() as session:
                    conv = Conversation(channel="web", sender_id=f"race-{round_}", profile="jiyuan", state="waiting",
                                        waiting_since=utcnow())
                    session.add(conv)
                    await session.commit()
                for each in (app, app_two):  # put in the queue behind the gateways' backs: tell their consoles
                    await each[ROUTER].waiting.queue_changed()
                buttons = [p.locator(f'#waiting .item[data-conversation="{conv.id}"] button') for p in pages]
                for button in buttons:
                    await expect(button).to_be_visible(timeout=10_000)
                started = time.perf_counter()
                await asyncio.gather(*(b.click() for b in buttons))
                outcomes: list[Any] = []
                for page in pages:  # each page shows either the chat or who took it
                    await page.wait_for_function("document.getElementById('error').textContent"
                                                 " || document.getElementById('conv-id').textContent", timeout=10_000)
                timings.append((time.perf_counter() - started) * 1000)
                for page in pages:
                    outcomes.append((await page.locator("#error").text_content(), await page.locator("#conv-id").text_content()))
                    await page.evaluate("document.getElementById('error').textContent = ''; "
                                        "document.getElementById('conv-id').textContent = ''")
                winners = [o for o in outcomes if not o[0]]
                losers = [o for o in outcomes if o[0]]
                assert len(winners) == 1 and len(losers) == 1, outcomes
                assert losers[0][0] in ("已被张伟接入", "已被李娜接入") and winners[0][1] == f"#{conv.id}"
                async with app[ROUTER].sessions() as session:
                    holder = await session.scalar(select(Conversation.agent_id).where(Conversation.id == conv.id))
                assert holder is not None
            print(f"\nclaim race in chromium on two replicas, both answered in ms: {[round(t) for t in timings]}")


class Clock:
    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset


@pytest.mark.rasa
async def test_nobody_claims_within_the_limit_and_the_citizen_gets_a_callback_order(
    tmp_path: Path, rasa_url: str
) -> None:
    clock = Clock()
    settings = settings_for(tmp_path, rasa_url, port=free_port(), console_secret="callback-test")
    async with served(settings, clock, background=False) as (app, base), chromium() as browser:
        await agents.add(app[ROUTER].sessions, "张伟", PASSWORD, "agent")
        agent = await console_login(browser, base, "张伟")  # online, but does not claim
        citizen = await Citizen.open(browser, base)
        await citizen.says("转人工")
        await expect(citizen.bots.last).to_contain_text("第1位", timeout=30_000)
        await expect(agent.locator("#waiting .item")).to_have_count(1, timeout=10_000)
        clock.offset = dt.timedelta(minutes=10, seconds=5)  # past jiyuan's 10 minutes
        await agent.reload()  # the console keeps polling: the agent is still online at the new time
        await expect(agent.locator("#waiting .item")).to_have_count(1, timeout=10_000)
        assert await app[ROUTER].waiting.sweep() == 1
        await expect(citizen.bots.last).to_contain_text("已为您登记回拨工单", timeout=10_000)
        async with app[ROUTER].sessions() as session:
            order = await session.scalar(select(WorkOrder))
        assert order is not None and order.facts["callback"] == "wait"
        await expect(citizen.bots.last).to_contain_text(order.number or "?")
        await expect(agent.locator("#waiting")).to_have_text("暂无等待的市民", timeout=10_000)
        await citizen.says("好的，谢谢")  # back with the bot
        await expect(citizen.bots.last).not_to_contain_text("回拨工单", timeout=30_000)
