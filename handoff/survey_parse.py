"""Reading a citizen's SMS reply to a survey: a rating (a digit of the profile's scale, 非常满意 …
非常不满意, 好/差), an optional order number, or an opt-out (退订/TD). Pure text; what the reply does
is survey_replies'.

Two scales: three levels (1满意 2基本满意 3不满意), and the 好差评 five levels of GB/T 39735-2020
(1非常满意 2满意 3基本满意 4不满意 5非常不满意) for a profile with `survey.scale: 5`. The words of
all five levels are read on either scale."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from handoff.ratings import BAD

_OPTOUT = {"TD", "T", "R", "N", "退订", "拒收", "退订短信", "退订回访"}
SCALES: dict[int, dict[str, str]] = {
    3: {"1": "satisfied", "2": "basically_satisfied", "3": "unsatisfied"},
    5: {"1": "very_satisfied", "2": "satisfied", "3": "basically_satisfied", "4": "unsatisfied",
        "5": "very_unsatisfied"},
}
# Checked in order: longer phrases first, so 不满意 is not read as 满意 and 差不多 not as 差.
_WORDS = (
    (("非常不满意", "很不满意", "特别不满意", "极不满意"), "very_unsatisfied"),
    (("非常满意", "很满意", "十分满意", "特别满意"), "very_satisfied"),
    (("基本满意", "差不多", "一般", "还行", "还可以", "凑合"), "basically_satisfied"),
    (("不满意", "不太满意", "差评", "不好", "差"), "unsatisfied"),
    (("满意", "好评", "好"), "satisfied"),
)
_PUNCT = re.compile(r"[\s.,，。!！?？~～、:：;；\"'“”‘’()（）【】\[\]<>《》#＃*-]+")
_ORDER_NO = re.compile(r"[A-Za-z]{0,4}(\d{4,})")
MAX_RATING_CHARS = 20  # longer messages are someone writing about something, not a rating


@dataclass(frozen=True)
class Parsed:
    kind: Literal["optout", "rating", "unreadable"]
    rating: str | None = None
    short: str | None = None  # last four digits of the order number the citizen named
    chars: int = 0  # length of the message without spaces and punctuation


def parse_reply(text: str, scale: int = 3) -> Parsed:
    """Read a digit of the scale (also full-width), 非常满意 … 非常不满意, 好/差, an optional order
    number, 退订/TD."""
    digit_ratings = SCALES[scale]
    norm = unicodedata.normalize("NFKC", text or "")
    spaced = _PUNCT.sub(" ", norm).strip()
    compact = spaced.replace(" ", "")
    if compact.upper() in _OPTOUT:
        return Parsed("optout", chars=len(compact))
    numbers = _ORDER_NO.findall(spaced)
    if len(numbers) > 1:
        return Parsed("unreadable", chars=len(compact))
    short = numbers[0][-4:] if numbers else None
    rest = _ORDER_NO.sub(" ", spaced).replace(" ", "") if numbers else compact
    if not rest or len(rest) > MAX_RATING_CHARS:
        return Parsed("unreadable", short=short, chars=len(compact))
    digits = re.findall(r"\d", rest)
    if len(digits) > 1 or (digits and digits[0] not in digit_ratings):
        return Parsed("unreadable", short=short, chars=len(compact))
    by_digit = digit_ratings[digits[0]] if digits else None
    by_word = next((rating for words, rating in _WORDS if any(w in rest for w in words)), None)
    if by_digit and by_word and (by_digit in BAD) != (by_word in BAD):
        return Parsed("unreadable", short=short, chars=len(compact))  # "1 不满意": ask rather than guess
    rating = by_word or by_digit
    if rating is None:
        return Parsed("unreadable", short=short, chars=len(compact))
    return Parsed("rating", rating=rating, short=short, chars=len(compact))
