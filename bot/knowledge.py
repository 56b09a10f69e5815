"""Answer common consultations from the profile's knowledge base (济源 第十二条(一): 能够直接答复的，当即答复).

Matching is deliberately conservative: an entry must share a keyword with the question *and* look
like one of its known phrasings, because a wrong canned answer is worse than a work order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from bot.facts import normalize
from common.text import knowledge_match

MIN_SIMILARITY = 0.22


@dataclass(frozen=True)
class Entry:
    id: str
    question: str
    patterns: tuple[str, ...]
    keywords: tuple[str, ...]
    answer: str
    source: str


@lru_cache(maxsize=8)
def load(path: Path) -> tuple[Entry, ...]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return tuple(
        Entry(
            e["id"], e["question"], tuple(str(x) for x in e["patterns"]), tuple(str(k) for k in e["keywords"]), e["answer"].strip(), e.get("source", "")
        )
        for e in data["entries"]
    )


def best_answer(text: str, path: Path | None) -> tuple[Entry, float] | None:
    """The best-matching entry and its score, or None when nothing matches well enough."""
    if path is None or not path.is_file():
        return None
    text = normalize(text)
    best: tuple[Entry, float] | None = None
    for entry in load(path):
        hits, score = knowledge_match(text, entry.keywords, (entry.question, *entry.patterns))
        if not hits:
            continue
        if score >= MIN_SIMILARITY and (best is None or score > best[1]):
            best = (entry, score)
    return best
