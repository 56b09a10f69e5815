"""Senders who flood or abuse the service are limited for a time set by the profile (济源 第三十三条;
濠江 五: warning, yellow and red card). Their messages are still stored; only the bot stops answering."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ScalarSelect, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, aliased

from common.text import matched_keyword
from gateway.models import SenderLimit
from profiles import Profile
from storage.base import utcnow
from storage.conversations import Conversation, Message

WARNING_TEXT = "请文明用语。多次发送侮辱、骚扰信息将被暂时限制使用本渠道（第{n}次提醒，共{limit}次）。"


@dataclass(frozen=True)
class Standing:
    """A sender's record as the database has it at the start of a turn."""

    limited_until: dt.datetime | None
    recent: int  # their messages within the profile's flood window, this one included


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
        # Built once: building the correlated subqueries cost more than running them.
        self._standing_query = select(*self.standing_columns(bindparam("since"))).where(
            Conversation.id == bindparam("conversation_id")
        )

    @staticmethod
    def standing_columns(since: Any) -> tuple[ScalarSelect[Any], ScalarSelect[Any]]:
        """The standing as two subqueries correlated to `Conversation`, so it can ride along a query
        the turn makes anyway (most senders never have a limit row: it is made on the first strike).
        `since` is the start of the flood window: a datetime, or a bindparam in a prebuilt query."""
        limited_until = (
            select(SenderLimit.limited_until)
            .where(SenderLimit.channel == Conversation.channel, SenderLimit.sender_id == Conversation.sender_id)
            .correlate(Conversation)
            .scalar_subquery()
        )
        counted = aliased(Message)
        recent = (
            select(func.count(counted.id))
            .where(counted.conversation_id == Conversation.id, counted.direction == "in", counted.created_at >= since)
            .correlate(Conversation)
            .scalar_subquery()
        )
        return limited_until, recent

    def flood_window_start(self, profile: Profile) -> dt.datetime:
        return self.clock() - dt.timedelta(seconds=profile.abuse.flood_window_s)

    def read_standing(self, session: Session, conv: Conversation, profile: Profile) -> Standing:
        """The standing on its own, for a conversation read without it, inside the caller's unit of work."""
        params = {"since": self.flood_window_start(profile), "conversation_id": conv.id}
        until, recent = session.execute(self._standing_query, params).one()
        return Standing(until, recent or 0)

    async def standing(self, session: AsyncSession, conv: Conversation, profile: Profile) -> Standing:
        return await session.run_sync(lambda sync: self.read_standing(sync, conv, profile))

    async def check(self, conv: Conversation, text: str, profile: Profile, standing: Standing | None = None) -> Decision:
        """`standing` read in the same turn saves a read; without it, it is read here. A session is
        opened only when there is something to read or record: most messages need neither."""
        rules = profile.abuse
        now = self.clock()
        limited_text = rules.message.format(hours=f"{rules.limit_hours:g}")
        if standing is None:
            async with self.sessions() as session:
                standing = await self.standing(session, conv, profile)
        if standing.limited_until is not None and standing.limited_until > now:
            return Decision(limited_text=limited_text)
        flooding = standing.recent > rules.flood_messages
        if not flooding and matched_keyword(text, rules.keywords) is None:
            return Decision()
        async with self.sessions() as session:
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
