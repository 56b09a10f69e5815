"""WeChat's customer-service quota: after a citizen's message, 5 messages within 48 hours (the
quota does not add up: each citizen message sets it back to 5). Counted from our own records (the
citizen's last stored message, the items sent since), so the console can show what is left and the
sender holds the sixth instead of calling WeChat for a 45047. Without a stored citizen message
(nothing to count from) WeChat's own answer decides, as before."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.conversations import Conversation, Message
from storage.outbox import Allowance, OutboxItem

WINDOW = dt.timedelta(hours=48)
REPLIES_PER_MESSAGE = 5
IN_FLIGHT = ("pending", "sending")


async def allowance(sessions: async_sessionmaker[AsyncSession], channel: str, openid: str, now: dt.datetime,
                    *, in_flight: bool = True) -> Allowance | None:
    """What is left for this citizen now; `in_flight`: count the items still on their way too (the
    console's view), not only those WeChat accepted (the sender's check before it sends one)."""
    async with sessions() as session:
        last_in = await session.scalar(
            select(func.max(Message.created_at)).join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.channel == channel, Conversation.sender_id == openid, Message.direction == "in"))
        if last_in is None:
            return None
        until = last_in + WINDOW
        if now >= until:
            return Allowance(0, None)
        counted = OutboxItem.status == "sent"
        if in_flight:
            counted = or_(counted, OutboxItem.status.in_(IN_FLIGHT))
        used = await session.scalar(
            select(func.count()).select_from(OutboxItem)
            .where(OutboxItem.channel == channel, OutboxItem.recipient == openid, counted,
                   or_(OutboxItem.sent_at >= last_in, OutboxItem.status.in_(IN_FLIGHT))))
    return Allowance(max(0, REPLIES_PER_MESSAGE - (used or 0)), until)
