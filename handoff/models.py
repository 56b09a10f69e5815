"""The handoff's tables: work orders and their history, satisfaction surveys, opt-outs and the
revisits a person has to make."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.base import Base, utcnow
from storage.conversations import Conversation


class WorkOrder(Base):
    """A 工单 in the built-in backend. `intake_id` makes creation idempotent."""

    __tablename__ = "work_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(String(32), unique=True)
    intake_id: Mapped[str] = mapped_column(String(64), unique=True)
    profile: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey(Conversation.id))
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
    # Jurisdiction rules: 诉求人要求保密, ID number where a rule demands real name,
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


class FollowupCode(Base):
    """A one-time code sent by SMS to an order's registered phone: a citizen writing from another
    channel or session proves the order is theirs before anything of it is shown or changed. The code
    is kept hashed; `action` is what was asked (withdraw or supplement, with its words), done on proof.
    Verified, it covers the orders of `contact_key` in this conversation for a while."""

    __tablename__ = "followup_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey(Conversation.id), index=True)
    contact_key: Mapped[str] = mapped_column(String(64), index=True)
    code_hash: Mapped[str] = mapped_column(String(128))
    action: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    verified_at: Mapped[dt.datetime | None] = mapped_column(default=None)


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
