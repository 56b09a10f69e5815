"""Fact extraction from what citizens actually type."""

import datetime as dt

import pytest

from bot import facts
from profiles import load

JIYUAN = load("jiyuan")
NOW = dt.datetime(2026, 11, 23, 15, 0, tzinfo=facts.CHINA_TZ)


@pytest.mark.parametrize(
    ("text", "phone"),
    [
        ("我电话13812345678", "13812345678"),
        ("手机 138 0000 1234 谢谢", "13800001234"),
        ("１３９００００５６７８", "13900005678"),  # full-width digits
        ("我电话是一三八一二三四五六七八", "13812345678"),
        ("幺三九零零零零五六七八", "13900005678"),
        ("座机0391-6633123", "0391-6633123"),
        ("12345", None),
        ("电话1381234", None),
        ("没有电话", None),
    ],
)
def test_phone(text: str, phone: str | None) -> None:
    assert facts.extract_phone(text) == phone


def test_mask_phone_hides_the_middle() -> None:
    assert facts.mask_phone("13812345678") == "138****5678"
    assert "6633" not in facts.mask_phone("0391-6633123")


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("昨天晚上十点烧烤店太吵", dt.datetime(2026, 11, 22, 22, 0)),
        ("上周三下午三点多", dt.datetime(2026, 11, 18, 15, 0)),
        ("前天", dt.datetime(2026, 11, 21, 0, 0)),
        ("10月5号", dt.datetime(2026, 10, 5, 0, 0)),
    ],
)
def test_time_points(text: str, start: dt.datetime) -> None:
    fact = facts.extract_time(text, NOW)
    assert fact is not None and fact.start is not None
    assert fact.start.replace(tzinfo=None) == start


@pytest.mark.parametrize(
    ("text", "written", "start"),
    [
        ("噪音很大,从11月20日开始一直这样", "从11月20日开始", dt.datetime(2026, 11, 20, 0, 0)),
        ("声音特别大，从11月20日开始", "从11月20日开始", dt.datetime(2026, 11, 20, 0, 0)),
        ("昨天晚上十点多烧烤店太吵", "昨天晚上十点", dt.datetime(2026, 11, 22, 22, 0)),
    ],
)
def test_a_time_reads_as_the_citizen_wrote_it(text: str, written: str, start: dt.datetime) -> None:
    """No "大,从11月20日开始": the clause before the comma is not part of the time (issue 13)."""
    fact = facts.extract_time(text, NOW)
    assert fact is not None and fact.start is not None
    assert (fact.text, fact.start.replace(tzinfo=None)) == (written, start)


def test_time_spans_ongoing_and_unknown() -> None:
    assert "半个月" in facts.extract_time("已经半个月了", NOW).display()
    assert "持续" in facts.extract_time("一直都这样", NOW).display()
    assert facts.extract_time("路灯坏了", NOW) is None
    assert facts.time_answer("记不清了", NOW) is not None
    # "3号楼" is a building, not the 3rd of the month.
    assert facts.extract_time("沁园街道某小区3号楼门口井盖丢了", NOW) is None


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("昨天晚上十点，济源市人民路和建设路口的烧烤店噪音太大", "济源市人民路和建设路口"),
        ("沁园街道御龙湾小区3号楼门口井盖丢了", "沁园街道御龙湾小区3号楼门口"),
        ("在天坛路与济源大道交叉口往东有个坑", "天坛路与济源大道交叉口"),
        ("五龙口镇路灯坏了", "五龙口镇"),
        ("我想咨询社保怎么补缴", None),
    ],
)
def test_place(text: str, place: str | None) -> None:
    assert facts.extract_place(text, JIYUAN) == place


def test_place_answer_keeps_free_text_and_rejects_nonsense() -> None:
    assert facts.place_answer("就在我家楼下那个菜市场", JIYUAN)
    assert facts.place_answer("12", JIYUAN) is None
    assert facts.place_answer("😀😀", JIYUAN) is None


@pytest.mark.parametrize(
    ("text", "name"),
    [("我姓王", "王"), ("叫我李师傅就行", "李师傅"), ("王小明", "王小明"), ("13800001234", None), ("<script>", None)],
)
def test_name(text: str, name: str | None) -> None:
    assert facts.name_answer(text) == name


def test_anonymity_and_content() -> None:
    assert facts.wants_anonymity("匿名吧")
    assert facts.wants_anonymity("名字就不方便说了")
    assert not facts.wants_anonymity("王先生")
    assert not facts.has_content("😀😀😀！！")
    assert facts.has_content("路灯坏了😀")


@pytest.mark.parametrize(
    ("text", "start"),
    [("上个月开始的", "2026-10-01"), ("这个月一直这样", "2026-11-01"), ("上上个月", "2026-09-01"), ("上个月15号", "2026-10-15")],
)
def test_relative_months(text: str, start: str) -> None:
    """jionlp has no bare 上个月 / 这个月; they are filled in, and 上个月15号 still goes to jionlp."""
    now = dt.datetime(2026, 11, 23, 10, 0, tzinfo=facts.CHINA_TZ)
    fact = facts.extract_time(text, now)
    assert fact is not None and fact.start is not None and fact.start.date().isoformat() == start


@pytest.mark.parametrize(
    ("text", "expected"),
    [("身份证 11010519491231002x", "11010519491231002X"), ("110105 19491231 002X", "11010519491231002X"),
     ("没有身份证号", None)],
)
def test_id_numbers(text: str, expected: str | None) -> None:
    assert facts.extract_id_number(text) == expected


@pytest.mark.parametrize("text", ["110105194912310021", "110105194913310028", "000000194912310026"])
def test_id_numbers_with_wrong_check_digit_date_or_region_are_refused(text: str) -> None:
    with pytest.raises(facts.IdNumberError):
        facts.extract_id_number(text)


def test_id_number_masking_and_order_numbers() -> None:
    assert facts.mask_id_number("11010519491231002X") == "110***********002X"
    assert facts.extract_order_number("工单 gl 20261101000021 补充") == "GL20261101000021"
    assert facts.extract_order_number("电话13800001234") is None
