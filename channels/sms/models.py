"""The SMS channel's table: every segment handed to a provider."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, utcnow
from storage.outbox import OutboxItem


class SmsRecord(Base):
    """Every SMS segment handed to a provider (or to the log provider), and what became of it."""

    __tablename__ = "sms_records"
    __table_args__ = (UniqueConstraint("outbox_id", "part"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey(OutboxItem.id), default=None)
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
