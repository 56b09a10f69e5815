"""Buttons written once (common/buttons.py): how channels without buttons show them, and how a typed
reply is read back as the button it names."""

from __future__ import annotations

from channels.sms.channel import render as sms_text
from channels.wechat.api import render as wechat_text
from common import buttons

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
    assert sms_text({"text": "· 联系电话：本机号码", "buttons": list(OFFERED)}) == "· 联系电话：本机号码\n回复1确认提交，2修改，3取消"


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
