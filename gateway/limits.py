"""Senders who flood or abuse the service are limited for a time set by the profile (济源 第三十三条;
濠江 五: warning, yellow and red card). Their messages are still stored; only the bot stops answering."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.facts import matched_keyword
from gateway.models import Conversation, Message, SenderLimit, utcnow
from profiles import Profile

WARNING_TEXT = "请文明用语。多次发送侮辱、骚扰信息将被暂时限制使用本渠道（第{n}次提醒，共{limit}次）。"


@dataclass(frozen=True)
class Decision:
    limited_text: str | None = None  # the sender is limited: answer this and do not ask the bot
    warning: str | None = None  # an abusive message below the limit: warn, then answer as usual


class SenderLimits:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], dt.datetime] = utcnow
    ) -> None:
        self.sessions = sessions
        self.clock = clock

    async def check(self, conv: Conversation, text: str, profile: Profile) -> Decision:
        rules = profile.abuse
        now = self.clock()
        limited_text = rules.message.format(hours=f"{rules.limit_hours:g}")
        since = now - dt.timedelta(seconds=rules.flood_window_s)
        async with self.sessions() as session:
            # One statement on every message (most senders never have a limit row: it is created on
            # the first strike), so an ordinary turn costs a single round trip here.
            limited_until = select(SenderLimit.limited_until).where(
                SenderLimit.channel == conv.channel, SenderLimit.sender_id == conv.sender_id
            ).scalar_subquery()
            recent = select(func.count(Message.id)).where(
                Message.conversation_id == conv.id, Message.direction == "in", Message.created_at >= since
            ).scalar_subquery()
            until, count = (await session.execute(select(limited_until, recent))).one()
            if until is not None and until > now:
                return Decision(limited_text=limited_text)
            flooding = (count or 0) > rules.flood_messages
            if not flooding and matched_keyword(text, rules.keywords) is None:
                return Decision()
            row = await self._row(session, conv)
            if flooding:
                return await self._limit(session, row, now, "flood", limited_text, rules.limit_hours)
            row.strikes += 1
            if row.strikes >= rules.strikes:
                return await self._limit(session, row, now, "abuse", limited_text, rules.limit_hours)
            await session.commit()
            return Decision(warning=WARNING_TEXT.format(n=row.strikes, limit=rules.strikes))

    async def _row(self, session: AsyncSession, conv: Conversation) -> SenderLimit:
        query = select(SenderLimit).where(SenderLimit.channel == conv.channel, SenderLimit.sender_id == conv.sender_id)
        row = await session.scalar(query)
        if row is None:
            session.add(SenderLimit(channel=conv.channel, sender_id=conv.sender_id, strikes=0, reason=""))
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
            row = await session.scalar(query)
        assert row is not None
        return row

    @staticmethod
    async def _limit(
        session: AsyncSession, row: SenderLimit, now: dt.datetime, reason: str, text: str, hours: float
    ) -> Decision:
        row.limited_until = now + dt.timedelta(hours=hours)
        row.reason = reason
        row.strikes = 0
        await session.commit()
        return Decision(limited_text=text)
