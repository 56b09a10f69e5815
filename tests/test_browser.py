"""A citizen completes a whole intake on the chat page in Debian's chromium (headless, Playwright)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, WebSocket, async_playwright, expect

from gateway.app import create_app
from gateway.botproc import free_port
from gateway.config import ROOT
from tests.conftest import settings_for

pytestmark = [pytest.mark.rasa, pytest.mark.browser]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def served(tmp_path: Path, rasa_url: str) -> AsyncIterator[tuple[int, Browser]]:
    """The whole gateway on a free loopback port, and Debian's chromium to open its chat page."""
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - a one-off check before anything starts
        pytest.fail("Debian chromium is missing: `make test` installs it")
    port = free_port()
    runner = web.AppRunner(create_app(settings_for(tmp_path, rasa_url, port=port)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            yield port, browser
            await browser.close()
    finally:
        await runner.cleanup()


class Frames:
    """What the page's WebSocket received from the gateway, one list of reply texts per turn."""

    def __init__(self, page: Page) -> None:
        self.opened = asyncio.Event()
        self.replies: list[str] = []
        self.done = 0
        self._changed = asyncio.Event()
        page.on("websocket", self._socket)

    def _socket(self, ws: WebSocket) -> None:
        self.opened.set()
        ws.on("framereceived", self._frame)

    def _frame(self, payload: str | bytes) -> None:
        frame = json.loads(payload)
        if frame["type"] == "reply":
            self.replies.append(frame["text"])
        elif frame["type"] == "done":
            self.done += 1
            self._changed.set()

    async def turn(self, done_before: int) -> str:
        """The replies of the turn that ends with the next "done" frame."""
        async with asyncio.timeout(30):
            while self.done <= done_before:
                self._changed.clear()
                await self._changed.wait()
        return "\n".join(self.replies)


async def test_whole_intake_in_the_browser(served: tuple[int, Browser], tmp_path: Path) -> None:
    port, browser = served
    page = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone screen
    frames = Frames(page)
    await page.goto(f"http://127.0.0.1:{port}/")
    await asyncio.wait_for(frames.opened.wait(), 10)
    bots = page.locator(".msg.bot")

    async def say(text: str, expect_text: str) -> None:
        """The bot's answer arrives over the WebSocket and is shown on the page."""
        count, done, frames.replies = await bots.count(), frames.done, []
        await page.fill("#input", text)
        await page.keyboard.press("Enter")
        assert expect_text in await frames.turn(done), frames.replies
        await expect(bots.nth(count)).to_be_visible(timeout=30_000)
        await expect(bots.last).to_contain_text(expect_text, timeout=30_000)

    await say("前天下午济源市宣化街菜市场门口的下水道堵了，污水流得满街都是，臭得不行", "联系电话")
    await say("13800004321", "称呼")
    await say("<b>李女士</b>", "称呼")  # markup is not a name: asked again
    await expect(page.locator(".msg.me").last).to_have_text("<b>李女士</b>")  # shown as text
    await expect(page.locator(".msg b")).to_have_count(0)
    await say("李女士", "请核对")
    done, frames.replies = frames.done, []
    await page.get_by_role("button", name="确认提交").last.click()
    assert "工单号" in await frames.turn(done), frames.replies
    await expect(bots.last).to_contain_text("工单号", timeout=30_000)
    receipt = await bots.last.inner_text()
    assert re.search(r"JY\d{14}", receipt)
    # The click is kept as what the citizen saw and clicked, on the page and in the transcript.
    await expect(page.locator(".msg.me").last).to_have_text("确认提交")
    with sqlite3.connect(tmp_path / "hotline.db") as db:
        [(transcript,)] = db.execute("SELECT transcript FROM work_orders").fetchall()
    said = [line["text"] for line in json.loads(transcript) if line["from"] == "citizen"]
    assert said[-1] == "确认提交" and not any(t.startswith("/") for t in said), said
    shots = ROOT / "var" / "test-logs"
    shots.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(shots / "chat-page.png"), full_page=True)


# The cases the judgment review named, each a new citizen on the chat page: what the first reply must say, and
# what it must not.
FIRST_REPLIES = [
    ("河堤决口了，水已经进村了，俺们村还有好些老人没撤出来", "119", "联系电话"),
    ("我姐把一整瓶安眠药都吃了，现在叫她没反应", "120", "联系电话"),
    ("想表扬一下沁园街道社区的网格员小王，帮我家老人办了高龄补贴，跑前跑后特别耐心", "“表扬”类", "不能受理"),
    ("帮我查一下我的社保缴费记录，看看单位这半年有没有给我交", "社保|“咨询”类", "不能受理"),
    ("老城区那边的路灯坏了好几个，晚上黑乎乎的，老人出门不安全", "您的诉求属于", "不属于"),
    ("我在郑州上班，家在济源天坛街道，小区物业把电梯停了两个月不修", "您的诉求属于", "不属于"),
    (
        "关于小区开发商迟迟不办房产证的问题。尊敬的领导：您好！我们是济源市北海街道某小区的业主，2018年交房至今已经六年，"
        "开发商一直以各种理由拖着不给办不动产权证，孩子上学、老人落户都受影响，多次找售楼部和住建部门都没有结果，"
        "恳请领导督促开发商尽快办理。",
        "您的诉求属于",
        "请直接描述",
    ),
]


async def test_the_cases_of_the_judgment_issue_in_the_browser(served: tuple[int, Browser]) -> None:
    port, browser = served
    for text, wanted, unwanted in FIRST_REPLIES:
        page = await browser.new_page(viewport={"width": 390, "height": 844})  # a new citizen each time
        await page.goto(f"http://127.0.0.1:{port}/")
        bots = page.locator(".msg.bot")
        await expect(bots.first).to_contain_text("12345")
        count = await bots.count()
        await page.fill("#input", text)
        await page.keyboard.press("Enter")
        await expect(bots.nth(count)).to_contain_text(re.compile(wanted), timeout=30_000)
        replies = " ".join((await bots.all_inner_texts())[count:])
        assert unwanted not in replies, (text, replies)
        await page.close()
