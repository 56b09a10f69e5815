"""Tables: conversations and their messages (gateway), work orders and their history (handoff)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every database. SQLite has no time zones and
    would otherwise keep a China-time deadline's wall clock as if it were UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware one (UTC or China time)")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, dt.datetime: UTCDateTime()}


class Conversation(Base):
    """One citizen on one channel; `state` decides who answers: bot, waiting (for an agent), with_agent."""

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("channel", "sender_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    sender_id: Mapped[str] = mapped_column(String(128))
    profile: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="bot")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    messages: Mapped[list[Message]] = relationship(back_populates="conversation", order_by="Message.id")


class Message(Base):
    """Every message in and out, kept before anything else happens so nothing is lost."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("conversation_id", "direction", "provider_message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    direction: Mapped[str] = mapped_column(String(3))  # "in" or "out"
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # in: received → done | pending_bot (bot unreachable, retried) ; out: queued → delivered
    status: Mapped[str] = mapped_column(String(16), index=True)
    reply_to: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="messages")


class WorkOrder(Base):
    """A 工单 in the built-in backend. `intake_id` makes creation idempotent."""

    __tablename__ = "work_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(String(32), unique=True)
    intake_id: Mapped[str] = mapped_column(String(64), unique=True)
    profile: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"))
    category: Mapped[str] = mapped_column(String(16))
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    contact_phone: Mapped[str | None] = mapped_column(String(32))
    contact_name: Mapped[str | None] = mapped_column(String(64))
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    transcript: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="created")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    dispatch_due_at: Mapped[dt.datetime]
    due_at: Mapped[dt.datetime]
    limit_working_days: Mapped[int] = mapped_column(Integer)
    # Jurisdiction rules (issue 3): 诉求人要求保密, ID number where a rule demands real name,
    # why the order is urgent, how often the same matter came back, and the order it was attached to.
    confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    contact_id_number: Mapped[str | None] = mapped_column(String(32), default=None)
    urgent_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    repeat_count: Mapped[int] = mapped_column(Integer, default=0)
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    supplements: Mapped[list[Any]] = mapped_column(JSON, default=list)
    contact_key: Mapped[str | None] = mapped_column(String(64), index=True, default=None)  # hash of the phone

    events: Mapped[list[WorkOrderEvent]] = relationship(back_populates="work_order", order_by="WorkOrderEvent.id")


class WorkOrderEvent(Base):
    """Status history: who moved the order where, and when."""

    __tablename__ = "work_order_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    work_order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    work_order: Mapped[WorkOrder] = relationship(back_populates="events")


class SenderLimit(Base):
    """A sender limited for flooding or abuse (济源 第三十三条); their messages are still kept."""

    __tablename__ = "sender_limits"
    __table_args__ = (UniqueConstraint("channel", "sender_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    sender_id: Mapped[str] = mapped_column(String(128))
    strikes: Mapped[int] = mapped_column(Integer, default=0)
    limited_until: Mapped[dt.datetime | None] = mapped_column(default=None)
    reason: Mapped[str] = mapped_column(String(32), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


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
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"), default=None)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(default=None)


# --- SMS channel and satisfaction survey (issue 5) -------------------------------------------


class InboxKey(Base):
    """One row per provider callback item or ticket event already taken: callbacks are at-least-once,
    so a unique (source, key) makes a repeated push a no-op (../shared/reference/handoff.md §3.3)."""

    __tablename__ = "inbox_keys"
    __table_args__ = (UniqueConstraint("source", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(160))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SmsRecord(Base):
    """Every SMS segment handed to a provider (or to the log provider), and what became of it."""

    __tablename__ = "sms_records"
    __table_args__ = (UniqueConstraint("outbox_id", "part"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"), default=None)
    part: Mapped[int] = mapped_column(Integer, default=1)
    provider: Mapped[str] = mapped_column(String(16))
    phone: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(128), index=True, default=None)
    # sent (accepted by the provider) → delivered | failed (delivery report)
    delivery: Mapped[str] = mapped_column(String(16), default="sent")
    delivery_error: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reported_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Survey(Base):
    """One satisfaction survey (回访) of one round of a work order; its times are the timers.

    scheduled → queued (in the outbox) → open (provider accepted; window runs to due_at) →
    answered | defaulted; or opted_out / failed / cancelled (a human revisit is flagged).
    """

    __tablename__ = "surveys"
    __table_args__ = (UniqueConstraint("work_order_id", "round"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    work_order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id"), index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    phone: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    answer: Mapped[str] = mapped_column(Text, default="")  # the handling unit's answer, summarised in the SMS
    send_at: Mapped[dt.datetime] = mapped_column(index=True)
    sent_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    due_at: Mapped[dt.datetime | None] = mapped_column(default=None, index=True)
    rating: Mapped[str | None] = mapped_column(String(24), default=None)
    defaulted: Mapped[bool] = mapped_column(Boolean, default=False)
    rated_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    corrections: Mapped[int] = mapped_column(Integer, default=0)
    clarified: Mapped[bool] = mapped_column(Boolean, default=False)
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)  # closed | redo | expert_review | revisit
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)  # replies as received, with what they meant
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SmsOptOut(Base):
    """A number that replied 退订/TD: no survey SMS goes to it again."""

    __tablename__ = "sms_optouts"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), unique=True)
    text: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Revisit(Base):
    """A task for a person: phone the citizen (failed SMS, unsatisfied rating, no SMS survey possible)."""

    __tablename__ = "revisits"

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    reason: Mapped[str] = mapped_column(String(32))
    work_order_id: Mapped[int | None] = mapped_column(ForeignKey("work_orders.id"), default=None, index=True)
    phone: Mapped[str | None] = mapped_column(String(32), default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WeChatToken(Base):
    """A WeChat app's access token, shared by all replicas when there is no Redis (issue 4)."""

    __tablename__ = "wechat_tokens"

    appid: Mapped[str] = mapped_column(String(32), primary_key=True)
    token: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Media(Base):
    """A picture or voice note a citizen sent, fetched from the provider while its id is valid
    (WeChat keeps temporary media 3 days); found by the provider's media id from the transcript."""

    __tablename__ = "media"
    __table_args__ = (UniqueConstraint("channel", "media_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    media_id: Mapped[str] = mapped_column(String(256))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
