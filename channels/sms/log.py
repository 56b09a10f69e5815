"""The embedded default provider: nothing leaves the machine. Every SMS is recorded in the database
by the sender (as with real providers) and shown on the console with the number masked."""

from __future__ import annotations

import itertools
import sys

from channels.sms.base import ProviderResult
from channels.sms.templates import Message
from common.text import mask_phone
from gateway.logs import redact

NAME = "log"


class LogSms:
    name = NAME

    def __init__(self, sign_name: str) -> None:
        self.sign_name = sign_name
        self._ids = itertools.count(1)

    async def send(self, phone: str, message: Message, *, out_id: str) -> ProviderResult:
        print(f"[sms {message.template.kind}] → {mask_phone(phone)}: 【{self.sign_name}】{redact(message.text)}",
              file=sys.stderr, flush=True)
        return ProviderResult("sent", provider_id=f"log-{out_id}-{next(self._ids)}")

    async def close(self) -> None:
        return None
