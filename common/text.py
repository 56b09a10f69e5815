"""Text rules shared by the bot (Python 3.10, Rasa's venv) and the gateway: plain standard library,
so the gateway can use them without loading the bot's language libraries."""

from __future__ import annotations

import re
import unicodedata


def normalize(text: str) -> str:
    """NFKC folds full-width digits and letters, which citizens' phones often produce."""
    return unicodedata.normalize("NFKC", text or "").strip()


def matched_keyword(text: str, keywords: tuple[str, ...]) -> str | None:
    """The first profile keyword in the text (case-insensitive for Latin letters)."""
    text = normalize(text).lower()
    return next((k for k in keywords if k.lower() in text), None)


def mask_phone(phone: str | None) -> str:
    """138****5678: enough for a citizen to recognise their number, not enough to call it."""
    if not phone:
        return ""
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 7:
        return "*" * len(digits)
    return f"{digits[:3]}****{digits[-4:]}"


def _bigrams(text: str) -> set[str]:
    chars = [c for c in normalize(text) if c.isalnum()]
    return {a + b for a, b in zip(chars, chars[1:], strict=False)} or set(chars)


def similarity(a: str, b: str) -> float:
    """Dice coefficient of character bigrams: robust to word segmentation and to typos."""
    x, y = _bigrams(a), _bigrams(b)
    return 2 * len(x & y) / (len(x) + len(y)) if x and y else 0.0


KEYWORD_BONUS = 0.05  # per keyword beyond the first


def knowledge_match(text: str, keywords: tuple[str, ...], phrasings: tuple[str, ...]) -> tuple[int, float]:
    """How well a question fits a knowledge-base entry: (its keywords found in the text, the best
    similarity to one of its phrasings plus a little per extra keyword). The bot's answer and the
    console's quick replies rank with it."""
    hits = sum(1 for k in keywords if k in text)
    return hits, max((similarity(text, p) for p in phrasings), default=0.0) + KEYWORD_BONUS * max(0, hits - 1)
