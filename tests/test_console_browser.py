"""An agent takes a citizen's chat in Debian's chromium: the citizen's page and the console in two
browser contexts, the real bot before and after, messages live both ways, then back to the bot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import async_playwright, expect

from gateway.app import ROUTER, create_app
from gateway.botproc import free_port
from gateway.config import ROOT
from handoff import agents
from tests.conftest import settings_for
from tests.test_browser import ARGS, CHROMIUM

pytestmark = [pytest.mark.rasa, pytest.mark.browser]
PASSWORD = "correct horse battery"


async def test_an_agent_takes_a_web_chat_in_the_browser(tmp_path: Path, rasa_url: str) -> None:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - a one-off check before anything starts
        pytest.fail("Debian chromium is missing: `make test` installs it")
    port = free_port()
    app = create_app(settings_for(tmp_path, rasa_url, port=port, console_secret="browser-test"))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await agents.add(app[ROUTER].sessions, "张伟", PASSWORD, "agent")
    base = f"http://127.0.0.1:{port}"
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            citizen = await (await browser.new_context()).new_page()
            await citizen.goto(f"{base}/")
            bots = citizen.locator(".msg.bot")
            await expect(bots.first).to_contain_text("12345")

            async def citizen_says(text: str) -> None:
                await citizen.fill("#input", text)
                await citizen.keyboard.press("Enter")

            await citizen_says("转人工")
            await expect(bots.last).to_contain_text("第1位", timeout=30_000)

            agent = await (await browser.new_context()).new_page()
            await agent.goto(f"{base}/console/")
            assert agent.url.endswith("/console/login")  # no session: the login form
            await agent.fill("#name", "张伟")
            await agent.fill("#password", PASSWORD)
            await agent.get_by_role("button", name="登录").click()
            item = agent.locator("#waiting .item")
            await expect(item).to_contain_text("网页", timeout=10_000)
            await item.get_by_role("button", name="接入").click()
            transcript = agent.locator("#transcript")
            await expect(transcript.locator(".msg.citizen").first).to_have_text("市民转人工")
            await expect(bots.last).to_have_text("人工客服已接入，请直接说明您的问题。", timeout=10_000)  # pushed live

            await citizen_says("我家楼下路灯坏了一个星期了")
            await expect(transcript.locator(".msg.citizen").last).to_contain_text("路灯坏了", timeout=10_000)
            await agent.fill("#reply", "好的，请问是哪条街？")
            await agent.keyboard.press("Enter")
            await expect(bots.last).to_have_text("好的，请问是哪条街？", timeout=10_000)
            await citizen_says("宣化街")
            await expect(transcript.locator(".msg.citizen").last).to_contain_text("宣化街", timeout=10_000)
            shots = ROOT / "var" / "test-logs"
            shots.mkdir(parents=True, exist_ok=True)
            await agent.screenshot(path=str(shots / "console.png"), full_page=True)

            await agent.get_by_role("button", name="交还智能客服").click()
            await expect(bots.last).to_contain_text("智能客服继续为您服务", timeout=10_000)
            await citizen_says("你好")
            await expect(bots.last).to_contain_text("12345", timeout=30_000)  # the bot answers again
            await browser.close()
    finally:
        await runner.cleanup()
