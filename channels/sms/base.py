"""What every SMS provider offers the gateway: send one segment, say what happened.

Providers differ in signing, templates and callback shapes; those stay in their modules. Here:
the result type, phone-number normalisation and the 70-character segment rule
(the carriers' rule both providers document: signature 【…】 + text ≤ 70 characters is one SMS;
a longer one is split and billed per 67).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

Outcome = Literal["sent", "retry", "failed"]
Kind = Literal["reply", "survey"]

_MAINLAND = re.compile(r"^(?:\+?86|0086)?(1[3-9]\d{9})$")
_BREAKS = "。！？；\n"
_SOFT_BREAKS = "，、：,;:"


@dataclass(frozen=True)
class ProviderResult:
    """sent (provider accepted it, provider_id = BizId / SerialNo); retry (outage, throttling);
    failed (the provider will never take it: bad number, template, credentials)."""

    outcome: Outcome
    provider_id: str | None = None
    error: str = ""


class SmsProvider(Protocol):
    name: str

    async def send(self, phone: str, text: str, *, kind: Kind, out_id: str) -> ProviderResult: ...

    async def close(self) -> None: ...


def normalise_phone(raw: str) -> str | None:
    """A mainland mobile number as 11 digits, whatever prefix the provider used; None otherwise."""
    digits = re.sub(r"[\s-]", "", raw or "")
    match = _MAINLAND.match(digits)
    return match.group(1) if match else None


def segments(text: str, sign_name: str, limit: int = 70) -> list[str]:
    """Split text so each SMS (with its 【signature】) fits one segment, breaking at sentence ends,
    then at commas, and only as a last resort inside a sentence. Short text stays whole."""
    text = re.sub(r"[ \t]+", " ", text.strip())
    budget = max(10, limit - len(sign_name) - 2)
    if len(text) <= budget:
        return [text] if text else []
    parts: list[str] = []
    rest = text
    while len(rest) > budget:
        window = rest[:budget]
        cut = max((window.rfind(c) for c in _BREAKS), default=-1)
        if cut < budget // 3:
            cut = max(cut, max((window.rfind(c) for c in _SOFT_BREAKS), default=-1))
        if cut < budget // 3:
            cut = budget - 1
        parts.append(rest[: cut + 1].strip())
        rest = rest[cut + 1 :].lstrip()
    if rest:
        parts.append(rest)
    return [p for p in parts if p]
