"""The WeChat channel's table: access tokens shared by replicas without Redis."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, utcnow


class WeChatToken(Base):
    """A WeChat app's access token, shared by all replicas when there is no Redis."""

    __tablename__ = "wechat_tokens"

    appid: Mapped[str] = mapped_column(String(32), primary_key=True)
    token: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
