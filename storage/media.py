"""Attachments a citizen sent, kept in the database for the handling units' API."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, utcnow


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
