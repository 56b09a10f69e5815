"""Buttons, written once: what the bot offers (title → payload), how channels without buttons show
them as text, and how a citizen's typed reply is read back as the button it names."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from common.text import normalize

Button = dict[str, str]
PROMPT = "回复"
ENDS = "。？！：；，.?!:;,"  # text ending so needs no line break before the choices


def from_rasa(raw: Any) -> tuple[Button, ...]:
    """Rasa's button list as {"title", "payload"} strings; anything else in it is dropped."""
    return tuple(
        {"title": str(b.get("title", "")), "payload": str(b.get("payload", ""))}
        for b in raw or ()
        if isinstance(b, dict)
    )


def titles(buttons: Iterable[Any] | None) -> list[str]:
    return [str(b.get("title")) for b in buttons or () if isinstance(b, dict) and b.get("title")]


def as_text(text: str, buttons: Iterable[Any] | None, *, own_line: bool = False) -> str:
    """Text for a channel that cannot show buttons: "回复1确认提交，2修改，3取消" after the text (SMS:
    on the same line, every character counts; WeChat: on a line of its own). Nothing can be tapped
    there, so the choices are numbered; the router reads a number or a title back as the button."""
    names = titles(buttons)
    if not names:
        return text
    line = PROMPT + "，".join(f"{i}{t}" for i, t in enumerate(names, 1))
    if own_line:
        return f"{text}\n\n{line}"
    return text + line if not text or text[-1] in ENDS else f"{text}\n{line}"


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
