"""A work order's state machine in the built-in backend: which event may follow which, and what
each does to the order (status, due date, history). Surveys build on it (handoff/survey.py).

Handling units send the public events (dispatched, signed, extended, returned, replied, closed);
the survey produces the internal ones (reopened for a redo, expert_review). Every transition is a
conditional UPDATE on the current status, so two replicas or a retried callback cannot apply one
event twice or skip a state.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.deadlines import due_date
from handoff.models import WorkOrder, WorkOrderEvent
from profiles import Profile

PUBLIC_EVENTS = ("dispatched", "signed", "extended", "returned", "replied", "closed")
# event → statuses it may follow
ALLOWED: dict[str, tuple[str, ...]] = {
    "dispatched": ("created", "returned", "reopened"),
    "signed": ("dispatched", "reopened"),
    "extended": ("signed", "extended", "reopened"),
    "returned": ("dispatched", "signed", "extended", "reopened"),
    "replied": ("signed", "extended", "reopened"),
    "closed": ("replied", "expert_review"),
    "reopened": ("replied", "closed", "expert_review"),
    "expert_review": ("replied", "closed"),
}
MAX_EXTENSION_DAYS = 30


def aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


class TransitionError(ValueError):
    """The event does not follow from the order's current status (or its data is unusable)."""


async def apply(
    session: AsyncSession,
    order: WorkOrder,
    event: str,
    *,
    now: dt.datetime,
    note: str = "",
    days: int | None = None,
    profile: Profile | None = None,
) -> WorkOrderEvent:
    """Move the order along in the caller's transaction; raises TransitionError when it may not."""
    allowed = ALLOWED.get(event)
    if allowed is None:
        raise TransitionError(f"unknown event {event!r}; expected one of {', '.join(ALLOWED)}")
    if order.status not in allowed:
        raise TransitionError(f"{event} cannot follow {order.status} (only after {', '.join(allowed)})")
    values: dict[str, object] = {"status": event}
    if event == "extended" and days is None and profile is not None and profile.complex_limit_working_days:
        # 枝江 第十七条(二): a complex matter has its own limit (15 working days), counted like the first.
        limit = profile.complex_limit_working_days
        values["due_at"] = due_date(aware(order.created_at), limit, count_start_day=profile.count_start_day)
        values["limit_working_days"] = limit
        note = note or f"复杂事项，办理时限{limit}个工作日（{profile.complex_article or profile.document}）"
    elif event == "extended":
        if not isinstance(days, int) or not 1 <= days <= MAX_EXTENSION_DAYS:
            raise TransitionError(f"extended needs days: an integer from 1 to {MAX_EXTENSION_DAYS}")
        values["due_at"] = due_date(aware(order.due_at), days, count_start_day=False)
        values["limit_working_days"] = order.limit_working_days + days
        note = note or f"延期{days}个工作日"
    elif event == "reopened":
        values["due_at"] = redo_due(order, now, profile)
    result = await session.execute(
        update(WorkOrder).where(WorkOrder.id == order.id, WorkOrder.status == order.status).values(**values)
    )
    if result.rowcount != 1:
        raise TransitionError(f"{event}: the order changed meanwhile; read it again")
    for key, value in values.items():
        setattr(order, key, value)
    row = WorkOrderEvent(work_order_id=order.id, status=event, note=note[:2000], at=now)
    session.add(row)
    return row


def redo_due(order: WorkOrder, now: dt.datetime, profile: Profile | None) -> dt.datetime:
    """A redo gets the kind's limit again, plus the profile's extension (济源 第十四条(一): +2 working
    days; 濠江: none), counted from the reopening."""
    extra = profile.survey.redo_extra_working_days if profile is not None else None
    count_start = profile.count_start_day if profile is not None else True
    limit = order.limit_working_days
    if profile is not None and order.category in profile.categories:
        limit = profile.categories[order.category].limit_working_days
    return due_date(now, limit + (extra or 0), count_start_day=count_start)
