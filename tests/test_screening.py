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


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("legal_procedure", "我跟公司的劳动争议已经在仲裁了，你们能不能催一下"),
        ("outside_authority", "法院判了对方还钱一直不执行，你们催催法院"),
        ("confidential", "帮我查一下我前妻现在的家庭住址"),
        ("civil_dispute", "我借给同学三万块钱两年了不还"),
    ],
)
def test_screened_kinds_cite_the_article_and_refer(kind: str, text: str) -> None:
    verdict = screen(text, nlu((kind, 0.9)), JIYUAN)
    assert verdict.reason == kind and verdict.article and verdict.article.startswith("第十条")
    assert verdict.message and "12345热线不能受理" in verdict.message


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        # The model's confident guess without the words that would make the rule apply: accepted, flagged.
        ("confidential", "帮我查一下我的社保缴费记录，看看单位有没有断交"),
        ("legal_procedure", "我们村五组什么时候能启动征地拆迁，补偿标准是多少"),
        ("outside_authority", "小区门口的早餐摊每天占道经营，城管来了就跑"),
        ("no_substance", "你们这些人到底管不管事，我们小区门口的垃圾堆了半个月没人清理，臭气熏天，蚊子苍蝇到处都是"),
    ],
)
def test_a_refusal_needs_clear_evidence_else_the_dispatcher_decides(kind: str, text: str) -> None:
    verdict = screen(text, nlu((kind, 0.8), ("consult", 0.1), ("complaint", 0.05)), JIYUAN)
    assert verdict.accepted and verdict.reason is None and verdict.doubt == kind
    assert verdict.category in ("consult", "complaint")


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
        ("焦作市解放区的工厂拖欠我工资", "焦作市"),
        ("我在焦作上班，家在济源，小区的路灯坏了", None),  # where the citizen works is not the matter's place
        ("我老家是郑州的，现在住的小区物业乱收费", None),
        ("快递公司总部在深圳，这边的网点不给派件", None),
        ("老城区的路灯坏了好几天", None),  # generic words place the matter nowhere
        ("城区有个井盖丢了", None),
        ("高新区那边的工地晚上施工", None),
        ("桐梓路上的井盖丢了", None),  # a street, not 桐梓县
        ("贵州省遵义市桐梓县的景区门票乱收费", "贵州省"),
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


@pytest.mark.parametrize("name", ["jiyuan", "zhijiang", "haojiang", "guilin", "neimenggu"])
def test_praise_is_accepted_in_every_profile(name: str) -> None:
    verdict = screen("感谢沁园街道的工作人员帮我们解决了问题", nlu(("praise", 0.95)), load(name))
    assert verdict.accepted and verdict.category == "praise" and verdict.reason is None


def test_praise_needs_a_word_of_praise() -> None:
    letter = "尊敬的领导：您好！我们小区南门外的路面坑洼不平已经两年了，下雨天积水很深，老人孩子出行很不方便，希望尽快修"
    verdict = screen(letter, nlu(("praise", 0.7), ("complaint", 0.2)), JIYUAN)
    assert verdict.accepted and verdict.category == "complaint"


def test_a_letter_is_a_request_whatever_the_model_thought_of_its_greeting() -> None:
    letter = "尊敬的领导：您好！我是天坛街道某小区的业主，开发商承诺的房产证已经拖了三年还没办下来，多次找售楼部都推脱"
    verdict = screen(letter, nlu(("greet", 0.9), ("complaint", 0.05)), JIYUAN)
    assert verdict.accepted and verdict.category == "complaint"


@pytest.mark.parametrize(
    "letter",
    [
        "关于银杉路口交通事故多发的建议。这个路口没有红绿灯，去年以来发生了好几起交通事故，希望交警部门尽快安装信号灯和监控，"
        "并在路口设置减速带，保障过往行人和学生的安全，谢谢领导。",
        "南楚古街很多消防逃生门被锁住。一旦发生火灾，后果不堪设想，商户为了防盗把逃生门都上了锁，请消防部门检查整改，"
        "消除安全隐患，保障游客和商户的生命财产安全。",
    ],
)
def test_a_letter_naming_a_danger_without_a_word_of_the_present_is_accepted(letter: str) -> None:
    verdict = screen(letter, nlu(("suggestion", 0.6), ("emergency", 0.3)), JIYUAN)
    assert verdict.accepted and verdict.reason is None


@pytest.mark.parametrize(
    "text",
    [
        "古街很多消防逃生门被锁住，一旦发生火灾就无法及时逃生，请尽快检查",  # a what-if
        "商场负一层商户抽烟的多，只想快点出来，存在很大的火灾安全隐患",  # a hazard, whatever else is urgent
        "2019.3.18施工单位在我们房屋旁边挖基坑，导致基脚塌方，房屋开裂",  # dated in the past
    ],
)
def test_a_danger_word_as_hazard_what_if_or_past_is_not_an_emergency(text: str) -> None:
    verdict = screen(text, nlu(("complaint", 0.5), ("emergency", 0.45)), JIYUAN)
    assert verdict.accepted and verdict.reason is None


def test_unclear_tense_refers_at_once_and_asks() -> None:
    verdict = screen("我家楼下那栋楼着火了", nlu(("help", 0.6), ("emergency", 0.3)), JIYUAN)
    assert verdict.reason == "emergency" and "119" in (verdict.message or "") and verdict.ask
    said_no = screen("我家楼下那栋楼着火了；不是，是上个月的事", nlu(("help", 1.0)), JIYUAN, danger_denied=True)
    assert said_no.accepted and said_no.category == "help"


def test_a_present_danger_is_referred_without_asking() -> None:
    verdict = screen("楼道里全是烟，我们现在下不去", nlu(("emergency", 0.9)), JIYUAN)
    assert verdict.reason == "emergency" and verdict.ask is None


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
