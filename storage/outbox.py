"""The durable outbox's table and what writes to it: an item is added in the transaction of the change
that caused it (`enqueue`), and a sender (one per channel name) says what became of each attempt.
Delivery itself (leases, retries, order) is gateway.outbox.OutboxWorker's."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.base import Base, utcnow
from storage.conversations import Conversation, Message

Outcome = Literal["sent", "retry", "failed", "held"]


class OutboxItem(Base):
    """One message to send to a provider (WeChat, SMS...), written in the same transaction as the
    change that caused it, and delivered with retries by gateway.outbox.OutboxWorker."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), index=True)  # names the Sender, e.g. "wechat:miniapp"
    recipient: Mapped[str] = mapped_column(String(128))  # openid, phone number...
    body: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"text", "buttons"?} or channel-specific
    # pending → sending → sent | failed (gave up) | held (cannot be sent now, e.g. WeChat's 48 h window)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    provider_id: Mapped[str | None] = mapped_column(String(128), default=None)
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True, default=None)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey(Conversation.id), default=None)
    message_id: Mapped[int | None] = mapped_column(ForeignKey(Message.id), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Sender(Protocol):
    async def send(self, item: OutboxItem) -> SendResult: ...


@dataclass(frozen=True)
class SendResult:
    """What a provider said: sent; retry later (outage, rate limit); failed for good; or held
    (valid but not sendable now, e.g. outside WeChat's 48-hour window) for another route."""

    outcome: Outcome
    provider_id: str | None = None
    error: str = ""
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Allowance:
    """How many more messages a provider will take for one recipient now, and until when (WeChat's
    customer-service quota); what is sent beyond it is held for the fallback."""

    left: int
    until: dt.datetime | None


def enqueue(
    session: Session | AsyncSession,
    *,
    channel: str,
    recipient: str,
    body: dict[str, Any],
    dedupe_key: str | None = None,
    conversation_id: int | None = None,
    message_id: int | None = None,
    not_before: dt.datetime | None = None,
) -> OutboxItem:
    """Add an item to the caller's transaction; it is sent only if that transaction commits."""
    item = OutboxItem(
        channel=channel,
        recipient=recipient,
        body=body,
        status="pending",
        attempts=0,
        next_attempt_at=not_before or utcnow(),
        last_error="",
        dedupe_key=dedupe_key,
        conversation_id=conversation_id,
        message_id=message_id,
    )
    session.add(item)
    return item
