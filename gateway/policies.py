"""Decisions about a channel's traffic that need more than the channel knows, given to the channel
by the app: channels stay ignorant of work orders and of each other."""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handoff.models import WorkOrder
from profiles import Profile
from storage.conversations import Message
from storage.outbox import OutboxItem, enqueue

log = logging.getLogger(__name__)

HELD_SMS_PREFIX = "您在微信上的留言有新回复："
SMS = "sms"  # the SMS channel's outbox name


class HeldReplyFallback:
    """A reply the channel will not deliver now (WeChat's 48-hour window) is kept, and the profile
    says how else to reach the citizen: "marker" shows it when they next write; "sms" sends it to
    the phone of the conversation's latest work order."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], profile: Profile) -> None:
        self.sessions = sessions
        self.profile = profile

    async def __call__(self, item: OutboxItem, text: str) -> None:
        fallback = self.profile.undeliverable_fallback
        async with self.sessions() as session:
            if item.message_id is not None:
                status = "queued" if "marker" in fallback else "held"
                await session.execute(update(Message).where(Message.id == item.message_id).values(status=status))
            phone = None
            if "sms" in fallback and item.conversation_id is not None:
                phone = await session.scalar(
                    select(WorkOrder.contact_phone)
                    .where(WorkOrder.conversation_id == item.conversation_id, WorkOrder.contact_phone.is_not(None))
                    .order_by(WorkOrder.id.desc())
                    .limit(1)
                )
            key = f"wechat-held-sms:{item.id}"
            if phone and await session.scalar(select(OutboxItem.id).where(OutboxItem.dedupe_key == key)) is None:
                enqueue(session, channel=SMS, recipient=phone, body={"text": HELD_SMS_PREFIX + text},
                        dedupe_key=key, conversation_id=item.conversation_id, message_id=item.message_id)
            await session.commit()
        log.info("%s: outbox %s held (fallback %s, sms=%s)", item.channel, item.id,
                 ",".join(fallback) or "none", bool(phone))
