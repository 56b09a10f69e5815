"""Pull the intake facts (time, place, phone, name) out of what a citizen wrote.

Libraries do the understanding: jionlp parses Chinese time expressions, cn2an turns spelled-out
digits into numbers, phonenumbers finds and validates phone numbers, jieba's part-of-speech
tagger finds place words. This module only decides which of their findings to keep.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import cn2an
import jieba
import jieba.posseg as pseg
import phonenumbers
from stdnum.cn import ric
from stdnum.exceptions import ValidationError

from common.china_time import CHINA_TZ
from common.text import mask_phone, matched_keyword, normalize  # noqa: F401 - shared with the gateway
from profiles import Profile

jieba.setLogLevel(60)

# Words that make a jieba token part of an address; the tagger alone misses 路/小区/门口 compounds.
_PLACE_SUFFIXES = (
    "路", "街", "道", "巷", "胡同", "村", "镇", "乡", "区", "县", "市", "小区", "广场", "公园", "市场",
    "学校", "小学", "中学", "医院", "口", "门口", "楼", "号", "单元", "院", "桥", "站", "大道", "交叉口",
    "附近", "对面", "旁边", "社区", "街道", "花园", "家园", "超市", "商场", "工地", "厂", "景区", "山",
)
_PLACE_FLAGS = {"ns", "s"}
# Words that place nothing on their own: 小区门口 could be anywhere.
_GENERIC_PLACE = ("我们", "我家", "家", "这个", "那个", "小区", "门口", "楼下", "楼上", "路口", "附近", "对面", "旁边",
                  "这里", "那里", "这边", "那边", "社区", "街道", "村里", "路上", "上")
_CONNECTORS = {"和", "与", "跟", "及", "、"}
# Answers that honestly say when without a date: the fact is known, just not a point in time.
_ONGOING_WORDS = ("好几个", "几个星期", "几个月", "一直", "经常", "每天", "天天", "每晚", "长期", "最近", "近期", "好久", "好几天", "多年", "总是", "反复")
# A bare part of the day (晚上黑乎乎的) names no day: not a time the citizen gave.
_PART_OF_DAY = {"早上", "上午", "中午", "下午", "晚上", "夜里", "半夜", "凌晨", "傍晚", "白天", "夜间"}
_UNKNOWN_WORDS = ("不记得", "记不清", "不清楚", "忘了", "不知道")
ANONYMOUS_WORDS = ("匿名", "不留名", "不想留", "不方便", "不愿意", "不告诉", "保密", "不想说", "不用留", "不留")


@dataclass(frozen=True)
class TimeFact:
    text: str
    start: dt.datetime | None = None

    def display(self) -> str:
        if self.start is None:
            return self.text
        return f"{self.text}（{self.start:%Y-%m-%d %H:%M}）"


def has_content(text: str) -> bool:
    """True when the text has at least one letter, digit or CJK character (not only emoji/punctuation)."""
    return any(unicodedata.category(ch)[0] in ("L", "N") for ch in normalize(text))


def _digits_spelled_out(text: str) -> str:
    # 幺 is how 一 is read aloud in phone numbers; cn2an knows 一.
    try:
        return cn2an.transform(text.replace("幺", "一"), "cn2an")
    except (ValueError, KeyError):
        return text


def extract_phone(text: str) -> str | None:
    """The first valid mainland phone number (mobile or landline), as national digits."""
    for candidate in (normalize(text), _digits_spelled_out(normalize(text))):
        for match in phonenumbers.PhoneNumberMatcher(candidate, "CN"):
            number = match.number
            if phonenumbers.is_valid_number(number) and number.country_code == 86:
                nsn = phonenumbers.national_significant_number(number)
                if phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE:
                    return nsn
                area = phonenumbers.length_of_geographical_area_code(number) or 3
                return f"0{nsn[:area]}-{nsn[area:]}"
    return None


def extract_time(text: str, now: dt.datetime | None = None) -> TimeFact | None:
    """A time the citizen named: a point (昨天晚上十点), a span (半个月了) or an honest 'ongoing'."""
    import jionlp

    now = now or dt.datetime.now(CHINA_TZ)
    text = normalize(text)
    try:
        found = jionlp.ner.extract_time(text, time_base=now.timestamp())
    except Exception:  # jionlp raises plain exceptions on odd inputs; no time is a valid outcome
        found = []
    for item in found:
        detail = item.get("detail", {})
        end = item.get("offset", [0, 0])[1]
        if text[end : end + 1] in ("楼", "院", "单", "栋", "门", "铺"):
            continue  # 3号楼 is a building, not the 3rd of the month
        if item.get("text") in _PART_OF_DAY:
            continue
        if detail.get("type") in ("time_point", "time_span") and isinstance(detail.get("time"), list):
            start = dt.datetime.fromisoformat(detail["time"][0]).replace(tzinfo=CHINA_TZ)
            return TimeFact(_as_written(item["text"], now), start)
        if detail.get("type") == "time_delta":
            return TimeFact(f"持续{item['text']}")
    month = _relative_month(text, now)
    if month is not None:
        return month
    for word in _ONGOING_WORDS:
        if word in text:
            return TimeFact(f"{word}（持续发生）")
    return None


_CLAUSE_BREAK = re.compile(r"[,，。;；!！?？、\s]+")


def _as_written(phrase: str, now: dt.datetime) -> str:
    """The time phrase as a person wrote it: jionlp may glue the end of the clause before a comma to
    it ("噪音很大,从11月20日开始" → "大,从11月20日开始"); clauses before the first one naming a time
    are dropped, the rest joined without the commas."""
    import jionlp

    parts = [p for p in _CLAUSE_BREAK.split(phrase) if p]
    while len(parts) > 1 and not jionlp.ner.extract_time(parts[0], time_base=now.timestamp()):
        parts.pop(0)
    return "".join(parts) or phrase


# jionlp 1.5 parses 上个星期 and 上个月1号 but not a bare month (上个月, 这个月, 本月): fill that gap only.
_MONTH_WORDS = {"上上个月": -2, "上个月": -1, "上月": -1, "这个月": 0, "本月": 0, "这月": 0}


def _relative_month(text: str, now: dt.datetime) -> TimeFact | None:
    for word, offset in _MONTH_WORDS.items():
        if word in text:
            index = now.year * 12 + now.month - 1 + offset
            return TimeFact(word, dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=CHINA_TZ))
    return None


def time_answer(text: str, now: dt.datetime | None = None) -> TimeFact | None:
    """Like extract_time, but a citizen who says they do not remember has still answered."""
    fact = extract_time(text, now)
    if fact is None and any(w in normalize(text) for w in _UNKNOWN_WORDS):
        return TimeFact("诉求人记不清具体时间")
    return fact


def _add_local_words(places: tuple[str, ...]) -> None:
    for name in places:
        jieba.add_word(name, freq=2000, tag="ns")


@lru_cache(maxsize=8)
def _prepare(places: tuple[str, ...]) -> bool:
    _add_local_words(places)
    return True


def _placeish(word: str, flag: str, local: tuple[str, ...]) -> bool:
    return flag in _PLACE_FLAGS or word in local or word.endswith(_PLACE_SUFFIXES)


def _placeish_soon(tokens: list[tuple[str, str]], i: int, local: tuple[str, ...]) -> bool:
    return i < len(tokens) and _placeish(*tokens[i], local)


def _specific(place: str) -> bool:
    rest = place
    for word in sorted(_GENERIC_PLACE, key=len, reverse=True):
        rest = rest.replace(word, "")
    return len(rest) >= 2


def extract_place(text: str, profile: Profile) -> str | None:
    """The longest run of address words (济源市人民路和建设路口, 沁园街道某小区3号楼)."""
    _prepare(profile.local_places)
    tokens = [(t.word, t.flag) for t in pseg.lcut(normalize(text))]
    best = ""
    run: list[str] = []
    strong = False
    for i, (word, flag) in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "x")
        nxt_place = bool(nxt[0]) and _placeish(nxt[0], nxt[1], profile.local_places)
        if _placeish(word, flag, profile.local_places):
            run.append(word)
            strong = strong or flag == "ns" or word.endswith(_PLACE_SUFFIXES)
        elif run and word in _CONNECTORS and (nxt_place or _placeish_soon(tokens, i + 2, profile.local_places)):
            run.append(word)
        elif nxt_place and flag not in ("p", "v", "x", "uj", "d", "r") and len(word) <= 4:
            run.append(word)  # 人民|路, 御|龙湾: a name part glued to the suffix after it
        else:
            candidate = "".join(run)
            if strong and len(candidate) > len(best) and len(candidate) >= 3 and _specific(candidate):
                best = candidate
            run, strong = [], False
    candidate = "".join(run)
    if strong and len(candidate) > len(best) and len(candidate) >= 3 and _specific(candidate):
        best = candidate
    return best or None


def place_answer(text: str, profile: Profile) -> str | None:
    """What the citizen answered when asked where: the address words, else their whole answer."""
    text = normalize(text)
    if not has_content(text) or len(text) < 2 or text.isdigit():
        return None
    return extract_place(text, profile) or text[:120]


def wants_anonymity(text: str) -> bool:
    return any(w in normalize(text) for w in ANONYMOUS_WORDS)


# Replies that are letters only but no name: button titles and the yes/no of a conversation.
NOT_A_NAME = ("确认", "提交", "修改", "取消", "好的", "是的", "可以", "没问题", "不用", "谢谢", "你好", "不知道", "人工", "客服")


def name_answer(text: str) -> str | None:
    """A name or form of address (王先生, 我姓李, 叫我张师傅就行); None when it does not look like one."""
    text = normalize(text)
    for prefix in ("我叫", "我姓", "叫我", "姓", "我是", "名字是", "姓名", "称呼我"):
        if prefix in text:
            text = text.split(prefix, 1)[1]
            break
    text = re.sub(r"(就行|就可以|就好|吧|。|，|,|！|!|\s)+$", "", text).strip()
    if any(word in text for word in NOT_A_NAME):
        return None  # a button title (确认提交) or a reply typed where the name was asked
    if 1 <= len(text) <= 12 and all(unicodedata.category(c)[0] == "L" or c == "·" for c in text):
        return text
    return None


_ID_CANDIDATE = re.compile(r"(?<![0-9A-Za-z])\d{17}[0-9Xx](?![0-9A-Za-z])")
DECLINE_WORDS = ("不想提供", "不提供", "不给", "不愿意", "不方便", "拒绝", "不想给", "凭什么", "没必要", "算了")


class IdNumberError(ValueError):
    """Why an ID number was refused, in words for the citizen."""


def extract_id_number(text: str) -> str | None:
    """A resident ID number (GB 11643) in the text, validated with its check digit by python-stdnum.

    Raises IdNumberError when something shaped like an ID is there but its check digit, date or
    region is wrong, so the citizen can be told which; None when there is no candidate at all."""
    text = normalize(_digits_spelled_out(text)).replace(" ", "")
    match = _ID_CANDIDATE.search(text)
    if match is None:
        return None
    try:
        return ric.validate(match.group(0).upper())
    except ValidationError as exc:
        raise IdNumberError(type(exc).__name__) from exc


def mask_id_number(value: str | None) -> str:
    if not value:
        return "未提供"
    return f"{value[:3]}{'*' * (len(value) - 7)}{value[-4:]}"


def declines(text: str) -> bool:
    return any(w in normalize(text) for w in DECLINE_WORDS)


_ORDER_NUMBER = re.compile(r"(?<![A-Za-z])([A-Za-z]{2})\s*(\d{14})(?!\d)")


def extract_order_number(text: str) -> str | None:
    """A work-order number (two letters, date, serial: JY20261123000042) as the citizen typed it."""
    match = _ORDER_NUMBER.search(normalize(text))
    return f"{match.group(1).upper()}{match.group(2)}" if match else None
