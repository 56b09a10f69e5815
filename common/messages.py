"""The one shape every channel speaks to the gateway in, and the one it gets back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

# Said when a message could not be committed (database locked or down, coordination down).
NOT_KEPT_TEXT = "抱歉，您的留言未能保存，请稍后重新发送。紧急情况请直接拨打110、119、120或122。"
NOT_KEPT_RETRY_AFTER_S = 5


class NotKept(Exception):
    """The message was not committed, so nobody may say it was kept: the channel answers "send it
    again" (HTTP 503 with Retry-After), and the same message id sent again is taken as new."""


# Work to do before a kept message is answered (e.g. queueing the fetch of a picture it carried).
Prepare = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class InboundMessage:
    """A citizen's message after the channel checked and parsed it; provider quirks stay behind."""

    channel: str
    sender_id: str
    text: str
    message_id: str | None = None
    received_at: dt.datetime | None = None  # None: now, by the app's one clock (the router stamps it)
    attachments: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Reply:
    """What the citizen sees: text and, where the channel can show them, buttons."""

    text: str
    buttons: tuple[dict[str, str], ...] = ()
    # Where the channel sends templates (SMS): the kind and variables standing for this text
    # (common/sms.py body), so a receipt costs one short SMS instead of its whole wording.
    template: dict[str, Any] | None = None

    def as_rest(self, recipient_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {"recipient_id": recipient_id, "text": self.text}
        if self.buttons:
            out["buttons"] = [dict(b) for b in self.buttons]
        return out
