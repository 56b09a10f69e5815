"""Reading a citizen's survey reply: digits (also full-width), words, an order number, 退订/TD."""

from __future__ import annotations

import datetime as dt

import pytest

from handoff.survey_parse import parse_reply
from handoff.survey_schedule import next_allowed
from profiles import load


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("1", "satisfied"), ("２", "basically_satisfied"), (" 3 ", "unsatisfied"), ("３。", "unsatisfied"),
        ("满意", "satisfied"), ("非常满意", "very_satisfied"), ("很满意，谢谢", "very_satisfied"),
        ("基本满意", "basically_satisfied"), ("不满意", "unsatisfied"), ("非常不满意！", "very_unsatisfied"),
        ("好", "satisfied"), ("好评", "satisfied"), ("差", "unsatisfied"), ("差评", "unsatisfied"),
        ("差不多吧", "basically_satisfied"), ("一般", "basically_satisfied"), ("不好", "unsatisfied"),
        ("1满意", "satisfied"), ("3 不满意", "unsatisfied"), ("1 非常满意", "very_satisfied"),
        ("　１　", "satisfied"),
    ],
)
def test_ratings(text: str, rating: str) -> None:
    parsed = parse_reply(text)
    assert (parsed.kind, parsed.rating, parsed.short) == ("rating", rating, None)


@pytest.mark.parametrize(
    ("text", "rating", "short"),
    [("1 0001", "satisfied", "0001"), ("0002 3", "unsatisfied", "0002"), ("JY20261201000017 满意", "satisfied", "0017"),
     ("工单0003不满意", "unsatisfied", "0003"), ("２　０００４", "basically_satisfied", "0004")],
)
def test_ratings_naming_an_order(text: str, rating: str, short: str) -> None:
    parsed = parse_reply(text)
    assert (parsed.kind, parsed.rating, parsed.short) == ("rating", rating, short)


@pytest.mark.parametrize("text", ["TD", "td", "ＴＤ", "退订", " 退订 ", "T", "R"])
def test_opt_out(text: str) -> None:
    assert parse_reply(text).kind == "optout"


@pytest.mark.parametrize(
    "text",
    ["嗯", "收到", "5", "12", "1 不满意", "3 满意", "", "   ",
     "我对小区物业的服务非常不满意，垃圾已经一个星期没人清理了，楼道里臭得不行",  # a new complaint, not a rating
     "0001 0002 1"],
)
def test_unreadable(text: str) -> None:
    assert parse_reply(text).kind == "unreadable"


def test_quiet_hours_in_china_time() -> None:
    rules = load("jiyuan").survey  # quiet 21:00-08:00
    cst = dt.timezone(dt.timedelta(hours=8))
    at = dt.datetime(2026, 12, 1, 22, 30, tzinfo=cst)
    assert next_allowed(at, rules) == dt.datetime(2026, 12, 2, 8, 0, tzinfo=cst)
    early = dt.datetime(2026, 12, 2, 7, 0, tzinfo=cst)
    assert next_allowed(early, rules) == dt.datetime(2026, 12, 2, 8, 0, tzinfo=cst)
    day = dt.datetime(2026, 12, 2, 20, 59, tzinfo=cst)
    assert next_allowed(day, rules) == day


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("1", "very_satisfied"), ("２", "satisfied"), ("3", "basically_satisfied"), ("4", "unsatisfied"),
        ("５", "very_unsatisfied"), ("5 非常不满意", "very_unsatisfied"), ("1非常满意", "very_satisfied"),
        ("满意", "satisfied"), ("非常不满意", "very_unsatisfied"), ("4 尾号0002", "unsatisfied"),
    ],
)
def test_the_five_level_scale_of_gb_t_39735(text: str, rating: str) -> None:
    """好差评 (GB/T 39735-2020): 1非常满意 2满意 3基本满意 4不满意 5非常不满意, for a profile with scale 5."""
    assert (parse_reply(text, scale=5).kind, parse_reply(text, scale=5).rating) == ("rating", rating)


def test_a_digit_means_what_its_scale_says() -> None:
    assert parse_reply("1").rating == "satisfied" and parse_reply("1", scale=5).rating == "very_satisfied"
    assert parse_reply("4").kind == "unreadable" and parse_reply("6", scale=5).kind == "unreadable"
    assert parse_reply("1 不满意", scale=5).kind == "unreadable"  # 非常满意 and 不满意 at once: ask


def test_the_profiles_that_use_the_five_levels() -> None:
    """濠江 三(八)/四(四) (好差评, 非常不满意) and 内蒙古 第十七条 (the 好差评 system) use five levels;
    the others three."""
    scales = {name: load(name).survey.scale for name in ("jiyuan", "zhijiang", "haojiang", "guilin", "neimenggu")}
    assert scales == {"jiyuan": 3, "zhijiang": 3, "haojiang": 5, "guilin": 3, "neimenggu": 5}


def test_the_survey_templates_say_the_digits_the_parser_reads() -> None:
    """The wording proposed for approval (channels/sms/templates.py) and the parser agree on each digit,
    and carry none of the words the providers refuse (问卷, 调查, 好评)."""
    from channels.sms.templates import BANNED, DEFAULT_CONTENT
    from common import sms
    from handoff.survey_replies import choices

    for kind, scale in ((sms.SURVEY, 3), (sms.SURVEY5, 5)):
        assert "回复" + choices(scale).replace("、", "") in DEFAULT_CONTENT[kind]
        assert not any(word in DEFAULT_CONTENT[kind] for word in BANNED)
