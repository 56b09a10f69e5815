"""What every SMS provider offers the gateway: send one template message, say what happened.

Providers differ in signing, template parameters and callback shapes; those stay in their modules.
Here: the result type and phone-number normalisation. Templates and the segment rule are in
templates.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

from channels.sms.templates import Message

Outcome = Literal["sent", "retry", "failed"]

_MAINLAND = re.compile(r"^(?:\+?86|0086)?(1[3-9]\d{9})$")


@dataclass(frozen=True)
class ProviderResult:
    """sent (provider accepted it, provider_id = BizId / SerialNo); retry (outage, throttling);
    failed (the provider will never take it: bad number, template, credentials)."""

    outcome: Outcome
    provider_id: str | None = None
    error: str = ""


class SmsProvider(Protocol):
    name: str

    async def send(self, phone: str, message: Message, *, out_id: str) -> ProviderResult: ...

    async def close(self) -> None: ...


def normalise_phone(raw: str) -> str | None:
    """A mainland mobile number as 11 digits, whatever prefix the provider used; None otherwise."""
    digits = re.sub(r"[\s-]", "", raw or "")
    match = _MAINLAND.match(digits)
    return match.group(1) if match else None
