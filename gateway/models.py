"""The gateway's table: senders limited for flooding or abuse."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, utcnow


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
