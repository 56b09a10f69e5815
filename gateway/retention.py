"""The retention job (`hotline retention run [--at]`): what citizens sent is kept for the profile's
windows (profiles/*.yml `retention`; 桂林 第十五条: recordings at least 3 years), then anonymised or
deleted, and what was removed is written to the audit log. Work orders, the archive, stay whole.

- chat messages older than `conversation_days`: text and attachments emptied (the rows stay, so
  counts and the outbox's references hold); a conversation silent that long gets a pseudonym for
  its sender (an SMS sender id is a phone number);
- pictures and voice notes older than `media_days`: deleted;
- Rasa's tracker events older than `tracker_days`: deleted from its tracker store's `events` table
  (SQLite or PostgreSQL, HOTLINE_TRACKER_DB_URL), whose slots hold phones and names;
- one-time follow-up codes past their use: deleted.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import String, cast, delete, exists, literal, null, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from handoff.agents import audit
from handoff.followups import PROOF_MINUTES
from handoff.models import FollowupCode
from profiles import Profile
from profiles import load as load_profile
from storage.conversations import Conversation, Message
from storage.media import Media

ERASED = "erased:"  # a pseudonymised sender id starts with this


async def run(
    sessions: async_sessionmaker[AsyncSession], profile: Profile, *, at: dt.datetime, tracker_db_url: str = ""
) -> dict[str, Any]:
    """One pass as of `at`; returns (and audits) the counts removed. Conversations follow their own
    profile's window; media and trackers, which carry no profile, follow `profile` (the gateway's)."""
    removed: dict[str, Any] = {"at": at.isoformat(), "profile": profile.id, "messages_emptied": 0,
                               "senders_pseudonymised": 0}
    async with sessions() as session:
        for name in (await session.scalars(select(Conversation.profile).distinct())).all():
            window = dt.timedelta(days=(profile if name == profile.id else load_profile(name)).retention.conversation_days)
            cutoff = at - window
            in_profile = select(Conversation.id).where(Conversation.profile == name).scalar_subquery()
            emptied = await session.execute(
                update(Message)
                .where(Message.conversation_id.in_(in_profile), Message.created_at < cutoff,
                       Message.status.not_in(("queued", "received", "pending_bot", "outbox")),
                       (Message.text != "") | Message.payload.is_not(None))
                .values(text="", payload=null()))  # SQL NULL, not JSON null
            removed["messages_emptied"] += emptied.rowcount or 0
            silent = await session.execute(
                update(Conversation)
                .where(Conversation.profile == name, Conversation.updated_at < cutoff,
                       Conversation.state == "bot", ~Conversation.sender_id.startswith(ERASED),
                       ~exists().where(Message.conversation_id == Conversation.id, Message.created_at >= cutoff))
                .values(sender_id=literal(ERASED) + cast(Conversation.id, String)))
            removed["senders_pseudonymised"] += silent.rowcount or 0
        media = await session.execute(
            delete(Media).where(Media.created_at < at - dt.timedelta(days=profile.retention.media_days)))
        removed["media_deleted"] = media.rowcount or 0
        codes = await session.execute(
            delete(FollowupCode).where(FollowupCode.created_at < at - dt.timedelta(minutes=PROOF_MINUTES, days=1)))
        removed["codes_deleted"] = codes.rowcount or 0
        removed["tracker_events_deleted"] = (
            await _trackers(tracker_db_url, at - dt.timedelta(days=profile.retention.tracker_days))
            if tracker_db_url else None)
        removed["windows_days"] = {"conversations": profile.retention.conversation_days,
                                   "media": profile.retention.media_days, "trackers": profile.retention.tracker_days}
        removed["article"] = profile.retention.article
        audit(session, None, "retention", name="retention", detail=removed)
        await session.commit()
    return removed


async def _trackers(url: str, cutoff: dt.datetime) -> int:
    """Rasa's SQL tracker store keeps one row per event with a Unix `timestamp`."""
    engine = create_async_engine(url, hide_parameters=True)
    try:
        async with engine.begin() as connection:
            done = await connection.execute(text("DELETE FROM events WHERE timestamp < :cutoff"),
                                            {"cutoff": cutoff.timestamp()})
            return done.rowcount or 0
    finally:
        await engine.dispose()
