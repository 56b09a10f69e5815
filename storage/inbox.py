"""Idempotent intake of pushes: provider callbacks and ticket events are delivered at least once."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, utcnow


class InboxKey(Base):
    """One row per provider callback item or ticket event already taken: callbacks are at-least-once,
    so a unique (source, key) makes a repeated push a no-op."""

    __tablename__ = "inbox_keys"
    __table_args__ = (UniqueConstraint("source", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(160))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
