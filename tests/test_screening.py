"""Screening rules that back the model: emergencies, jurisdiction, contentless messages."""

import pytest

from bot.screening import outside_place, screen
from profiles import load

JIYUAN = load("jiyuan")


def nlu(*ranking: tuple[str, float]) -> dict[str, object]:
    return {"intent_ranking": [{"name": n, "confidence": c} for n, c in ranking]}


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("楼下着火了快来人", "119"),
        ("我爸突然晕倒了叫不醒", "120"),
        ("有人拿刀在小区门口砍人", "110"),
        ("济源大道上刚刚两辆车撞车了有人受伤", "122"),
    ],
)
def test_emergency_keywords_win_even_when_the_model_is_unsure(text: str, number: str) -> None:
    verdict = screen(text, nlu(("complaint", 0.41), ("emergency", 0.30)), JIYUAN)
    assert verdict.reason == "emergency" and not verdict.accepted and verdict.urgent
    assert number in (verdict.message or "")


def test_past_fire_is_a_hotline_matter_not_an_emergency() -> None:
    verdict = screen("去年小区着火以后消防通道一直被堵着没人管", nlu(("complaint", 0.8)), JIYUAN)
    assert verdict.reason is None and verdict.category == "complaint" and verdict.accepted


def test_model_emergency_without_keyword_lists_all_numbers() -> None:
    verdict = screen("快来人啊出大事了", nlu(("emergency", 0.9)), JIYUAN)
    assert verdict.reason == "emergency"
    assert all(n in verdict.message for n in ("110", "119", "120", "122"))


@pytest.mark.parametrize("kind", ["legal_procedure", "outside_authority", "confidential", "civil_dispute"])
def test_screened_kinds_cite_the_article_and_refer(kind: str) -> None:
    verdict = screen("这是一段足够长的诉求文字内容", nlu((kind, 0.9)), JIYUAN)
    assert verdict.reason == kind and verdict.article and verdict.article.startswith("第十条")
    assert verdict.message and "12345热线不能受理" in verdict.message


def test_unsure_screened_guess_falls_back_to_a_request_kind() -> None:
    verdict = screen("小区门口的路灯坏了好几天了晚上很黑", nlu(("civil_dispute", 0.45), ("help", 0.4)), JIYUAN)
    assert verdict.accepted and verdict.category == "help"


@pytest.mark.parametrize("text", ["😀😀😀", "！！！？？", "   "])
def test_contentless(text: str) -> None:
    assert screen(text, nlu(("greet", 0.9)), JIYUAN).reason == "no_substance"


@pytest.mark.parametrize(
    ("text", "outside"),
    [
        ("郑州市金水区有个违建", "郑州市"),
        ("北京朝阳区的物业乱收费", "北京市"),
        ("我在焦作上班，工资被拖欠", "焦作市"),
        ("五龙口镇路灯坏了", None),  # 五龙口 is local, not 龙口市 (Shandong)
        ("朝阳路上的路灯坏了", None),  # a street, not 朝阳市
        ("郑州路口的红绿灯坏了", None),
        ("南阳人在济源打工被欠薪", None),  # a local place is named
        ("河南省的政策怎么规定的", None),  # a parent region includes the jurisdiction
    ],
)
def test_jurisdiction(text: str, outside: str | None) -> None:
    found = outside_place(text, JIYUAN)
    assert (found is None) == (outside is None)
    if outside:
        assert found.startswith(outside[:2])


def test_out_of_jurisdiction_verdict() -> None:
    verdict = screen("郑州市金水区有个违建一直没人管", nlu(("report", 0.95)), JIYUAN)
    assert verdict.reason == "out_of_jurisdiction" and "12345" in verdict.message


def test_praise_is_not_an_accepted_kind_in_jiyuan() -> None:
    verdict = screen("感谢沁园街道的工作人员帮我们解决了问题", nlu(("praise", 0.95)), JIYUAN)
    assert verdict.category == "praise" and not verdict.accepted and verdict.reason is None


def test_dialogue_turn_is_not_a_request() -> None:
    verdict = screen("好的", nlu(("affirm", 0.97)), JIYUAN)
    assert verdict.category is None and verdict.reason is None and not verdict.accepted


def test_urgent_outage() -> None:
    verdict = screen("我们整个小区停水两天了", nlu(("help", 0.9)), JIYUAN)
    assert verdict.accepted and verdict.urgent


@pytest.mark.parametrize(
    ("text", "model", "expected"),
    [
        ("我要投诉天坛路一家饭店油烟直排居民楼", "report", "complaint"),
        ("投诉天坛路有家饭店每天晚上把油烟直接排到居民楼", "report", "complaint"),
        ("举报宣化街有人在小区里面违规搭建彩钢房", "complaint", "report"),
        ("我想实名举报一下黄河大道边的废品站偷偷烧垃圾", "complaint", "report"),
        ("天坛路有家饭店每天晚上把油烟直接排到居民楼", "report", "report"),  # named neither: the model
        ("我要投诉举报天坛路饭店油烟直排", "report", "report"),  # named both: the model
        ("我想咨询一下怎么投诉物业乱收费", "consult", "consult"),  # only swaps the two confusable kinds
    ],
)
def test_the_citizens_own_word_decides_between_complaint_and_report(text: str, model: str, expected: str) -> None:
    others = [k for k in ("complaint", "report", "consult") if k != model]
    verdict = screen(text, nlu((model, 0.9), (others[0], 0.05), (others[1], 0.05)), JIYUAN)
    assert verdict.accepted and verdict.category == expected
