"""Buttons, written once: what the bot offers (title → payload), how channels without buttons show
them as text, and how a citizen's typed reply is read back as the button it names."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from common.text import normalize

Button = dict[str, str]
PROMPT = "请回复："


def from_rasa(raw: Any) -> tuple[Button, ...]:
    """Rasa's button list as {"title", "payload"} strings; anything else in it is dropped."""
    return tuple(
        {"title": str(b.get("title", "")), "payload": str(b.get("payload", ""))}
        for b in raw or ()
        if isinstance(b, dict)
    )


def titles(buttons: Iterable[Any] | None) -> list[str]:
    return [str(b.get("title")) for b in buttons or () if isinstance(b, dict) and b.get("title")]


def as_text(text: str, buttons: Iterable[Any] | None, *, numbered: bool) -> str:
    """Text for a channel that cannot show buttons. Numbered (SMS, one short line): "请回复：1确认、2修改";
    otherwise (WeChat customer-service text) the titles on a line of their own."""
    names = titles(buttons)
    if not names:
        return text
    if numbered:
        return text + PROMPT + "、".join(f"{i}{t}" for i, t in enumerate(names, 1))
    return f"{text}\n\n{PROMPT}{' / '.join(names)}"


def chosen_payload(reply: str, buttons: Iterable[Any] | None, *, numbered: bool) -> str | None:
    """The payload of the button a typed reply names: its title or, where they were numbered, its
    number (full-width forms folded); None when it names none."""
    choice = normalize(reply)
    for i, button in enumerate(buttons or (), 1):
        if not isinstance(button, dict) or not button.get("payload"):
            continue
        if choice == str(button.get("title", "")).strip() or (numbered and choice == str(i)):
            return str(button["payload"])
    return None
