"""The supervisor view's numbers: the hotline now, today and the last 30 days, per profile.

内蒙古 第十八条 names 响应率, 解决率 and 满意率 as the hotline's main measures without defining them;
here, over the work orders created in a period:
- response rate: dispatched or signed by the order's dispatch deadline, of those whose deadline has
  passed or that were answered already;
- resolution rate: replied or closed by the due date, of those due by now or already resolved;
- satisfaction rate: very satisfied, satisfied or basically satisfied, of the surveys rated in the
  period (a defaulted rating counts as the profile's default, as the regulations say).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.china_time import CHINA_TZ
from gateway.waiting import Waiting
from handoff import agents
from handoff.models import Survey, WorkOrder, WorkOrderEvent
from handoff.workorders import OPEN_STATUSES
from profiles import Profile
from storage.conversations import Conversation, Message

SATISFIED = ("very_satisfied", "satisfied", "basically_satisfied")
RESPONDED = ("dispatched", "signed")
RESOLVED = ("replied", "closed")
DAYS = 30


async def overview(sessions: async_sessionmaker[AsyncSession], waiting: Waiting, profile: Profile) -> dict[str, Any]:
    now = waiting.clock()
    today = now.astimezone(CHINA_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    month = today - dt.timedelta(days=DAYS - 1)
    present = await agents.presence(sessions, now)
    async with sessions() as session:
        queue = (await session.execute(
            select(func.count(), func.min(Conversation.waiting_since))
            .where(Conversation.state == "waiting", Conversation.profile == profile.id))).one()
        periods = {name: await _period(session, profile, since, now)
                   for name, since in (("today", today), ("days30", month))}
        daily = await _daily(session, profile, month)
    return {
        "profile": {"id": profile.id, "name": profile.short_name},
        "live": {"online": present.online, "busy": present.busy, "queue": queue[0],
                 "longest_wait_s": round((now - queue[1]).total_seconds()) if queue[1] else 0},
        **periods,
        "daily": daily,
    }


async def _period(session: AsyncSession, profile: Profile, since: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    channels: dict[str, int] = dict((await session.execute(
        select(Conversation.channel, func.count()).where(Conversation.profile == profile.id,
                                                         Conversation.created_at >= since)
        .group_by(Conversation.channel))).all())
    orders = (await session.scalars(select(WorkOrder).where(
        WorkOrder.profile == profile.id, WorkOrder.created_at >= since))).all()
    firsts = await _first_events(session, [o.id for o in orders])
    statuses = Counter(o.status for o in orders)
    overdue = sum(1 for o in orders if o.status in OPEN_STATUSES and o.due_at < now)
    responded = [o for o in orders if o.dispatch_due_at <= now or (o.id, "respond") in firsts]
    resolved = [o for o in orders if o.due_at <= now or (o.id, "resolve") in firsts]
    on_time_response = sum(1 for o in responded if firsts.get((o.id, "respond"), now) <= o.dispatch_due_at)
    on_time_resolution = sum(1 for o in resolved if firsts.get((o.id, "resolve"), now) <= o.due_at)
    ratings = list(await session.scalars(select(Survey.rating).join(WorkOrder, WorkOrder.id == Survey.work_order_id)
                                         .where(WorkOrder.profile == profile.id, Survey.rated_at >= since,
                                                Survey.rating.is_not(None))))
    screened = await _screened(session, profile, since)
    return {
        "conversations_by_channel": channels,
        "request_kinds": dict(Counter(o.category for o in orders)),
        "screening_reasons": screened,
        "work_orders_by_status": dict(statuses),
        "overdue": overdue,
        "callbacks": sum(1 for o in orders if (o.facts or {}).get("callback")),
        "response_rate": _rate(on_time_response, len(responded)),
        "resolution_rate": _rate(on_time_resolution, len(resolved)),
        "satisfaction_rate": _rate(sum(1 for r in ratings if r in SATISFIED), len(ratings)),
        "surveys_rated": len(ratings),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def _first_events(session: AsyncSession, order_ids: list[int]) -> dict[tuple[int, str], dt.datetime]:
    """When each order was first responded to (dispatched, signed) and first resolved (replied, closed)."""
    if not order_ids:
        return {}
    rows = await session.execute(
        select(WorkOrderEvent.work_order_id, WorkOrderEvent.status, func.min(WorkOrderEvent.at))
        .where(WorkOrderEvent.work_order_id.in_(order_ids), WorkOrderEvent.status.in_(RESPONDED + RESOLVED))
        .group_by(WorkOrderEvent.work_order_id, WorkOrderEvent.status))
    firsts: dict[tuple[int, str], dt.datetime] = {}
    for order_id, status, at in rows:
        key = (order_id, "respond" if status in RESPONDED else "resolve")
        firsts[key] = min(firsts.get(key, at), at)
    return firsts


async def _screened(session: AsyncSession, profile: Profile, since: dt.datetime) -> dict[str, int]:
    """Referral reasons, from the bot's payloads kept on the citizen's messages."""
    payloads = await session.scalars(
        select(Message.payload).join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.profile == profile.id, Message.direction == "in", Message.created_at >= since,
               Message.payload.is_not(None)))
    reasons: Counter[str] = Counter()
    for payload in payloads:
        for item in (payload or {}).get("bot", ()):
            if isinstance(item, dict) and isinstance(item.get("screened"), dict):
                reasons[str(item["screened"].get("reason") or "other")] += 1
    return dict(reasons)


async def _daily(session: AsyncSession, profile: Profile, since: dt.datetime) -> dict[str, Any]:
    """Conversations per channel and work orders per day, China time, for the 30-day charts."""
    days = [(since + dt.timedelta(days=i)).date().isoformat() for i in range(DAYS)]
    per_channel: dict[str, list[int]] = {}
    for channel, created in (await session.execute(
            select(Conversation.channel, Conversation.created_at)
            .where(Conversation.profile == profile.id, Conversation.created_at >= since))):
        series = per_channel.setdefault(channel, [0] * DAYS)
        series[(created.astimezone(CHINA_TZ).date() - since.date()).days] += 1
    orders = [0] * DAYS
    for created in await session.scalars(select(WorkOrder.created_at).where(
            WorkOrder.profile == profile.id, WorkOrder.created_at >= since)):
        orders[(created.astimezone(CHINA_TZ).date() - since.date()).days] += 1
    return {"days": days, "conversations_by_channel": per_channel, "work_orders": orders}
