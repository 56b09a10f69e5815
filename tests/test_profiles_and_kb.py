"""Profiles load and fail clearly; the knowledge base answers what it covers and nothing else."""

from pathlib import Path

import pytest

from bot.knowledge import best_answer
from profiles import ProfileError, available, load, parse_profile

JIYUAN = load("jiyuan")


def test_jiyuan_rules_from_the_regulation() -> None:
    assert "jiyuan" in available()
    # 第十三条(二): 3 / 5 / 7 working days, counting the signing day.
    assert {k: c.limit_working_days for k, c in JIYUAN.categories.items()} == {
        "consult": 3, "help": 5, "suggestion": 5, "complaint": 7, "report": 7, "praise": 5,
    }
    assert JIYUAN.count_start_day is True
    assert JIYUAN.facts_for("praise") == ("content", "phone")  # 第十条 does not refuse 表扬: no when or where
    assert JIYUAN.facts_for("complaint") == ("content", "event_time", "place", "phone")  # 第十一条
    assert {r.id: r.dispatch_hours for r in JIYUAN.urgent_rules} == {"outage": 2, "pollution_disaster": 2}  # 第十六条


def test_broken_profile_names_file_and_key(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "profiles" / "jiyuan.yml").read_text(encoding="utf-8")
    bad = tmp_path / "broken.yml"
    bad.write_text(text.replace("limit_working_days: 7}   # 第十三条(二) 投诉类 7 个工作日", "limit_working_days: seven}"), "utf-8")
    with pytest.raises(ProfileError) as err:
        parse_profile(bad)
    assert str(err.value) == "broken.yml: categories.complaint.limit_working_days: expected int, got str"


def test_unknown_fact_is_rejected(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "profiles" / "jiyuan.yml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.yml"
    bad.write_text(text.replace("consult: [content, phone]", "consult: [content, shoe_size]"), "utf-8")
    with pytest.raises(ProfileError, match="required_facts.consult"):
        parse_profile(bad)


def test_missing_profile() -> None:
    with pytest.raises(ProfileError, match="available: .*jiyuan"):
        load("atlantis")


@pytest.mark.parametrize(
    ("question", "entry"),
    [
        ("请问社保断缴了三个月还能补缴吗", "social_security_arrears"),
        ("身份证丢了怎么补办", "id_card_reissue"),
        ("公积金怎么提取出来", "housing_fund_withdrawal"),
    ],
)
def test_knowledge_base_answers(question: str, entry: str) -> None:
    hit = best_answer(question, JIYUAN.knowledge_base)
    assert hit is not None and hit[0].id == entry


@pytest.mark.parametrize("question", ["小区门口路灯坏了", "你们领导叫什么名字", "社保局门口卖烤红薯的占道了"])
def test_knowledge_base_stays_quiet_when_unsure(question: str) -> None:
    assert best_answer(question, JIYUAN.knowledge_base) is None
