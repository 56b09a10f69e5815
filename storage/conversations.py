"""Conversations and every message in and out: what was said is read by every layer (the router
answers it, work orders copy it into their transcript, the survey checks what the bot asked last)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.base import Base, utcnow


class Conversation(Base):
    """One citizen on one channel; `state` decides who answers: bot, waiting (for an agent), with_agent."""

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("channel", "sender_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    sender_id: Mapped[str] = mapped_column(String(128))
    profile: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="bot")
    # The human who holds it (state with_agent; handoff.agents.Agent) and since when it waits for one.
    agent_id: Mapped[int | None] = mapped_column(Integer, default=None)
    waiting_since: Mapped[dt.datetime | None] = mapped_column(default=None)
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
    # in: received → done | pending_bot (bot unreachable, retried) | failed (raised MAX_ATTEMPTS times,
    # payload.failed_attempts counts) ; out: queued → delivered
    status: Mapped[str] = mapped_column(String(16), index=True)
    reply_to: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="messages")
