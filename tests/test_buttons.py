"""Buttons written once (common/buttons.py): how channels without buttons show them, and how a typed
reply is read back as the button it names."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select

from channels.sms.channel import render as sms_text
from channels.wechat.api import render as wechat_text
from common import buttons
from gateway.config import ROOT
from handoff.lifecycle import aware
from storage.conversations import Message
from tests.conftest import Chat, Clock, gateway_client, router_of, settings_for
from tests.wechat_api_server import SlowBot

OFFERED = ({"title": "确认提交", "payload": "/affirm"}, {"title": "修改", "payload": "/correct"},
           {"title": "取消", "payload": "/cancel"})


def test_rasa_buttons_become_title_and_payload_strings() -> None:
    raw = [{"title": "确认提交", "payload": "/affirm"}, {"title": 1}, "not a button", {"payload": "/x", "type": "postback"}]
    assert buttons.from_rasa(raw) == ({"title": "确认提交", "payload": "/affirm"}, {"title": "1", "payload": ""},
                                      {"title": "", "payload": "/x"})
    assert buttons.from_rasa(None) == ()


def test_sms_numbers_the_titles_on_the_same_line() -> None:
    assert sms_text({"text": " 请确认您的诉求。 ", "buttons": list(OFFERED)}) == "请确认您的诉求。回复1确认提交，2修改，3取消"
    assert sms_text({"text": "已受理。"}) == "已受理。"
    assert sms_text({"text": "请核对：\n· 地点：天坛路\n· 联系电话：本机号码", "buttons": list(OFFERED)}) == (
        "请核对：地点：天坛路；联系电话：本机号码\n回复1确认提交，2修改，3取消")  # one line per fact costs SMS


def test_wechat_puts_the_numbered_titles_on_a_line_of_their_own() -> None:
    assert wechat_text({"text": "请确认您的诉求。", "buttons": list(OFFERED)}) == "请确认您的诉求。\n\n回复1确认提交，2修改，3取消"
    assert wechat_text({"text": "已受理。", "buttons": [{"title": ""}]}) == "已受理。"


def test_a_typed_title_or_where_numbered_its_number_selects_the_button() -> None:
    assert buttons.chosen_payload(" 确认提交 ", OFFERED, numbered=False) == "/affirm"
    assert buttons.chosen_payload("2", OFFERED, numbered=True) == "/correct"
    assert buttons.chosen_payload("３", OFFERED, numbered=True) == "/cancel"  # full-width digit from a phone
    assert buttons.chosen_payload("2", OFFERED, numbered=False) is None  # no numbers were shown
    assert buttons.chosen_payload("确认", OFFERED, numbered=True) is None
    assert buttons.chosen_payload("确认提交", [{"title": "确认提交", "payload": ""}], numbered=False) is None
    assert buttons.chosen_payload("1", None, numbered=True) is None


async def test_a_clicked_button_is_kept_as_its_title_and_reaches_the_bot_as_its_payload(
    tmp_path: Path, bot: tuple[SlowBot, str]
) -> None:
    """The chat page sends the title of the button clicked ("确认提交"): the transcript keeps what the
    citizen saw, the bot gets the payload. Every message is stamped by the app's one clock."""
    stand_in, url = bot
    stand_in.outputs["路灯坏了"] = [{"recipient_id": "x", "text": "请核对您的信息", "buttons": list(OFFERED)}]
    clock = Clock(dt.datetime(2026, 2, 12, 2, 0, tzinfo=dt.UTC))  # not today: a clock the test holds
    async with gateway_client(settings_for(tmp_path, url), clock, background=False) as client:
        chat = Chat(client, "web-title")
        await chat.say("路灯坏了")
        clock.advance(minutes=3)
        await chat.say("确认提交")
        await chat.say("修改一下地点")  # words, not a title: sent as written
        async with router_of(client).sessions() as session:
            rows = (await session.execute(select(Message.direction, Message.text, Message.created_at)
                                          .order_by(Message.id))).all()
    assert stand_in.messages == ["路灯坏了", "/affirm", "修改一下地点"]
    said = [text for direction, text, _ in rows if direction == "in"]
    assert said == ["路灯坏了", "确认提交", "修改一下地点"]
    stamps = {aware(at) for _, _, at in rows}
    assert stamps == {dt.datetime(2026, 2, 12, 2, 0, tzinfo=dt.UTC), dt.datetime(2026, 2, 12, 2, 3, tzinfo=dt.UTC)}


def test_the_chat_page_sends_the_title_of_the_button_clicked() -> None:
    page = (ROOT / "channels" / "web_static" / "index.html").read_text(encoding="utf-8")
    assert "send(b.title)" in page and "b.payload" not in page
