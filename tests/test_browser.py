"""A citizen completes a whole intake on the chat page in Debian's chromium (headless, Playwright)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import async_playwright, expect

from gateway.app import create_app
from gateway.botproc import free_port
from gateway.config import ROOT
from tests.conftest import settings_for

pytestmark = [pytest.mark.rasa, pytest.mark.browser]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


async def test_whole_intake_in_the_browser(tmp_path: Path, rasa_url: str) -> None:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - a one-off check before anything starts
        pytest.fail("Debian chromium is missing: `make test` installs it")
    port = free_port()
    runner = web.AppRunner(create_app(settings_for(tmp_path, rasa_url, port=port)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone screen
            await page.goto(f"http://127.0.0.1:{port}/")
            await expect(page.locator(".msg.bot").first).to_contain_text("12345")
            bots = page.locator(".msg.bot")

            async def say(text: str, expect_text: str) -> None:
                count = await bots.count()
                await page.fill("#input", text)
                await page.keyboard.press("Enter")
                await expect(bots.nth(count)).to_be_visible(timeout=30_000)
                await expect(bots.last).to_contain_text(expect_text, timeout=30_000)

            await say("前天下午济源市宣化街菜市场门口的下水道堵了，污水流得满街都是，臭得不行", "联系电话")
            await say("13800004321", "称呼")
            await say("<b>李女士</b>", "称呼")  # markup is not a name: asked again
            await expect(page.locator(".msg.me").last).to_have_text("<b>李女士</b>")  # shown as text
            await expect(page.locator(".msg b")).to_have_count(0)
            await say("李女士", "请核对")
            await page.get_by_role("button", name="确认提交").last.click()
            await expect(bots.last).to_contain_text("工单号", timeout=30_000)
            receipt = await bots.last.inner_text()
            assert re.search(r"JY\d{14}", receipt)
            shots = ROOT / "var" / "test-logs"
            shots.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(shots / "chat-page.png"), full_page=True)
            await browser.close()
    finally:
        await runner.cleanup()
