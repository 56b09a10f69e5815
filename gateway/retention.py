"""The retention job (`hotline retention run [--at]`): what citizens sent is kept for the profile's
windows (profiles/*.yml `retention`; 桂林 第十五条: recordings at least 3 years), then anonymised or
deleted, and what was removed is written to the audit log. Work orders, the archive, stay whole.

- chat messages older than `conversation_days`: text and attachments emptied (the rows stay, so
  counts and the outbox's references hold); a conversation silent that long gets a pseudonym for
  its sender (an SMS sender id is a phone number);
- pictures and voice notes older than `media_days`: deleted;
- Rasa's tracker events older than `tracker_days`: deleted from its tracker store's `events` table
  (SQLite or PostgreSQL, HOTLINE_TRACKER_DB_URL), whose slots hold phones and names;
- satisfaction surveys and revisit tasks older than `conversation_days` (the SMS exchange is a
  record of the call, kept as long as the chat): the phone anonymised and the citizen's reply texts
  emptied, the rating, status and outcome kept, so satisfaction figures stay countable;
- what each channel keeps of citizens (the SMS channel's sent records), past the gateway profile's
  `conversation_days`: through the channels' `forget` hook, given by the app layer; and, past the
  same window, delivered or abandoned outbox items: recipient (a phone or openid) and body erased;
- one-time follow-up codes past their use: deleted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import String, cast, delete, exists, literal, null, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from handoff.agents import audit
from handoff.followups import PROOF_MINUTES
from handoff.models import FollowupCode, Revisit, Survey, WorkOrder
from handoff.survey_replies import ACTIVE
from profiles import Profile
from profiles import load as load_profile
from storage.base import ERASED
from storage.conversations import Conversation, Message
from storage.media import Media
from storage.outbox import OutboxItem

# A channel's hook: anonymise or delete what it keeps of citizens from before the cutoff, in the
# caller's unit of work; returns counts by kind for the audit.
Forget = Callable[[AsyncSession, dt.datetime], Awaitable[dict[str, int]]]


async def run(
    sessions: async_sessionmaker[AsyncSession], profile: Profile, *, at: dt.datetime, tracker_db_url: str = "",
    forget: Sequence[Forget] = (),
) -> dict[str, Any]:
    """One pass as of `at`; returns (and audits) the counts removed. Conversations, surveys and
    revisits follow their own profile's window; media, trackers and the channels' records, which
    carry no profile, follow `profile` (the gateway's)."""
    removed: dict[str, Any] = {"at": at.isoformat(), "profile": profile.id, "messages_emptied": 0,
                               "senders_pseudonymised": 0, "survey_phones_erased": 0, "revisit_phones_erased": 0}
    async with sessions() as session:
        for name in (await session.scalars(select(Conversation.profile).distinct())).all():
            cutoff = at - _conversation_window(profile, name)
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
        for name in (await session.scalars(select(WorkOrder.profile).distinct())).all():
            surveys, revisits = await _followups(session, name, at - _conversation_window(profile, name))
            removed["survey_phones_erased"] += surveys
            removed["revisit_phones_erased"] += revisits
        channel_cutoff = at - dt.timedelta(days=profile.retention.conversation_days)
        outbox = await session.execute(
            update(OutboxItem)
            .where(OutboxItem.created_at < channel_cutoff, OutboxItem.status.in_(("sent", "failed")),
                   ~OutboxItem.recipient.startswith(ERASED))
            .values(recipient=literal(ERASED) + cast(OutboxItem.id, String), body={}))
        removed["outbox_items_erased"] = outbox.rowcount or 0
        for hook in forget:
            for kind, count in (await hook(session, channel_cutoff)).items():
                removed[kind] = removed.get(kind, 0) + count
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


def _conversation_window(gateway: Profile, name: str) -> dt.timedelta:
    return dt.timedelta(days=(gateway if name == gateway.id else load_profile(name)).retention.conversation_days)


async def _followups(session: AsyncSession, profile: str, cutoff: dt.datetime) -> tuple[int, int]:
    """Surveys and revisit tasks of `profile`'s orders from before `cutoff`: the phone and the
    citizen's words go; ratings, statuses and outcomes stay (the satisfaction figures count them).
    A survey the citizen can still answer keeps its phone (replies are matched by it)."""
    orders = select(WorkOrder.id).where(WorkOrder.profile == profile).scalar_subquery()
    rows = (await session.execute(
        select(Survey.id, Survey.history)
        .where(Survey.work_order_id.in_(orders), Survey.created_at < cutoff, Survey.status.not_in(("scheduled", *ACTIVE)),
               ~Survey.phone.startswith(ERASED)))).all()
    if rows:  # each row's history keeps what a reply meant, without its text
        await session.execute(update(Survey), [
            {"id": row.id, "phone": f"{ERASED}{row.id}",
             "history": [{**note, "text": ""} if isinstance(note, dict) and "text" in note else note
                         for note in row.history or []]}
            for row in rows])
    revisits = await session.execute(
        update(Revisit)
        .where(Revisit.work_order_id.in_(orders), Revisit.created_at < cutoff, Revisit.phone.is_not(None))
        .values(phone=None))
    return len(rows), revisits.rowcount or 0


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
