"""What a rating does to a work order: a good one closes it; an unsatisfied one sends it back for a
redo, to expert review or to a person to phone, as the profile's survey rules say, and an external
ticket system hears of it through the outbox."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from handoff import lifecycle
from handoff.models import Survey, WorkOrder, WorkOrderEvent
from handoff.notify import CHANNEL as TICKET_WEBHOOK
from handoff.revisits import flag_revisit
from profiles import Profile
from storage.outbox import enqueue

log = logging.getLogger(__name__)

LABELS = {
    "very_satisfied": "非常满意",
    "satisfied": "满意",
    "basically_satisfied": "基本满意",
    "unsatisfied": "不满意",
    "very_unsatisfied": "非常不满意",
}
BAD = ("unsatisfied", "very_unsatisfied")


async def consequence(
    session: AsyncSession, survey: Survey, order: WorkOrder, rating: str, now: dt.datetime, profile: Profile, *,
    webhook_url: str = "",
) -> str:
    """What a rating does to the order: close it, or (unsatisfied) redo, expert review or revisit."""
    label = LABELS[rating]
    if rating not in BAD:
        await move(session, order, "closed", now, f"市民评价{label}")
        outcome = "closed"
    else:
        redos = await session.scalar(
            select(func.count(Survey.id)).where(
                Survey.work_order_id == order.id, Survey.outcome == "redo", Survey.id != survey.id
            )
        ) or 0
        rules = profile.survey
        outcome = "redo" if redos < rules.max_redos else rules.after_last_redo
        if outcome == "redo":
            moved = await move(session, order, "reopened", now,
                               f"市民评价{label}，退回承办单位重新办理（{rules.article}）", profile)
            outcome = "redo" if moved else "revisit"  # e.g. the unit already closed it by hand
        elif outcome == "expert_review":
            await move(session, order, "expert_review", now, f"重办后市民仍评价{label}，启动专业评价")
        elif outcome == "close":
            await move(session, order, "closed", now, f"市民评价{label}，按规定办结")
        await flag_revisit(session, f"rating:{survey.id}:{survey.corrections}", "unsatisfied", order.id,
                           survey.phone, f"市民评价{label}（第{survey.round}轮回访）")
        if webhook_url:  # an external ticket system learns of it; the built-in one has the event
            enqueue(session, channel=TICKET_WEBHOOK, recipient=webhook_url, dedupe_key=(
                f"ticket-webhook:{survey.id}:{survey.corrections}"), not_before=now, body={
                    "number": order.number, "event": {"redo": "reopened"}.get(outcome, outcome),
                    "rating": rating, "round": survey.round, "due_at": order.due_at.isoformat(),
                    "at": now.isoformat()})
    await session.execute(update(Survey).where(Survey.id == survey.id).values(outcome=outcome))
    survey.outcome = outcome
    return outcome


async def move(session: AsyncSession, order: WorkOrder, event: str, now: dt.datetime, note: str,
               profile: Profile | None = None) -> bool:
    """Apply a survey's consequence when the order's status allows it; a rating must never fail
    because a handling unit moved the order meanwhile (the revisit still reaches a person)."""
    if order.status not in lifecycle.ALLOWED[event]:
        log.info("work order %s: %s skipped, status is %s", order.id, event, order.status)
        return False
    await lifecycle.apply(session, order, event, now=now, note=note, profile=profile)
    return True


async def withdraw_consequence(session: AsyncSession, survey: Survey, order: WorkOrder, rating: str,
                               now: dt.datetime) -> None:
    """A bad rating corrected to a good one within the window: the redo or review is withdrawn."""
    if order.status in ("reopened", "expert_review"):
        await session.execute(update(WorkOrder).where(WorkOrder.id == order.id).values(status="closed"))
        session.add(WorkOrderEvent(work_order_id=order.id, status="closed", at=now,
                                   note=f"市民将评价更正为{LABELS[rating]}，撤回重办"))
    await session.execute(update(Survey).where(Survey.id == survey.id).values(outcome="closed"))


async def close_defaulted(session: AsyncSession, owned: list[Any], rating: str, now: dt.datetime) -> None:
    """Surveys defaulted to a good rating: their replied orders close, with one event each."""
    order_ids = [order_id for _, order_id in owned]
    if not order_ids:
        return
    await session.execute(update(Survey).where(Survey.id.in_([s for s, _ in owned])).values(outcome="closed"))
    closed = (
        await session.execute(
            update(WorkOrder)
            .where(WorkOrder.id.in_(order_ids), WorkOrder.status == "replied")
            .values(status="closed")
            .returning(WorkOrder.id)
        )
    ).scalars().all()
    if closed:
        note = f"回访期满未评价，按默认{LABELS[rating]}办结"
        await session.execute(
            insert(WorkOrderEvent),
            [{"work_order_id": oid, "status": "closed", "note": note, "at": now} for oid in closed],
        )
