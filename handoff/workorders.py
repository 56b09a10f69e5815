"""The built-in work-order backend: create an order idempotently from a finished intake."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from gateway.models import Message, WorkOrder, WorkOrderEvent, utcnow
from handoff.deadlines import CHINA_TZ, due_date
from profiles import Profile


class IntakeError(ValueError):
    """The bot's intake payload is incomplete or names an unknown category."""


@dataclass(frozen=True)
class Receipt:
    number: str
    category_label: str
    limit_working_days: int
    due_at: dt.datetime
    urgent: bool
    created: bool

    def citizen_text(self) -> str:
        due = self.due_at.astimezone(CHINA_TZ)
        text = (
            f"您的{self.category_label}诉求已受理，工单号：{self.number}。"
            f"承办单位将在{self.limit_working_days}个工作日内（{due.year}年{due.month}月{due.day}日前）办理并答复您。"
        )
        if self.urgent:
            text += "该诉求已标记为紧急，将优先派发处理。"
        return text + "请记好工单号，以便查询进度。"


def _transcript(messages: list[Message]) -> list[dict[str, Any]]:
    """What was said, with what the citizen attached (WeChat pictures, voice: media ids and links)."""
    lines = []
    for m in messages:
        attachments = [a for a in (m.payload or {}).get("attachments", ()) if a.get("type") != "event"]
        if m.text or attachments:
            line = {"at": m.created_at.isoformat(), "from": "citizen" if m.direction == "in" else "bot", "text": m.text}
            lines.append(line | {"attachments": attachments} if attachments else line)
    return lines


async def create_from_intake(
    sessions: async_sessionmaker[AsyncSession],
    intake: dict[str, Any],
    profile: Profile,
    *,
    channel: str,
    conversation_id: int | None,
    now: dt.datetime | None = None,
) -> Receipt:
    """Create the work order for an intake, or return the existing one for the same intake id."""
    intake_id = str(intake.get("intake_id") or "")
    category = intake.get("category")
    if not intake_id or category not in profile.categories:
        raise IntakeError(f"intake without id or with category {category!r} not accepted by {profile.id}")
    spec = profile.categories[category]
    now = now or utcnow()
    urgent = bool(intake.get("urgent"))

    async with sessions() as session:
        existing = await session.scalar(select(WorkOrder).where(WorkOrder.intake_id == intake_id))
        if existing is not None:
            return Receipt(existing.number or "", spec.label, existing.limit_working_days, existing.due_at, existing.urgent, False)
        transcript: list[dict[str, Any]] = []
        if conversation_id is not None:
            rows = await session.scalars(
                select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id.desc()).limit(60)
            )
            transcript = _transcript(list(reversed(rows.all())))
        dispatch_hours = profile.urgent_dispatch_hours if urgent else profile.dispatch_hours
        order = WorkOrder(
            intake_id=intake_id,
            profile=profile.id,
            channel=channel,
            conversation_id=conversation_id,
            category=category,
            urgent=urgent,
            facts={k: intake.get(k) for k in ("content", "event_time", "place")},
            contact_phone=intake.get("phone"),
            contact_name=None if intake.get("anonymous") else intake.get("name"),
            anonymous=bool(intake.get("anonymous")),
            transcript=transcript,
            status="created",
            created_at=now,
            dispatch_due_at=now + dt.timedelta(hours=dispatch_hours),
            due_at=due_date(now, spec.limit_working_days, count_start_day=profile.count_start_day),
            limit_working_days=spec.limit_working_days,
        )
        session.add(order)
        try:
            await session.flush()
        except IntegrityError:
            await session.rollback()  # a concurrent submit of the same intake won the race
            return await create_from_intake(
                sessions, intake, profile, channel=channel, conversation_id=conversation_id, now=now
            )
        local = now.astimezone(CHINA_TZ)
        order.number = f"{profile.work_order_prefix}{local:%Y%m%d}{order.id:06d}"
        session.add(WorkOrderEvent(work_order_id=order.id, status="created", note=f"{channel} intake", at=now))
        await session.commit()
        return Receipt(order.number, spec.label, spec.limit_working_days, order.due_at, urgent, True)


async def get_by_number(sessions: async_sessionmaker[AsyncSession], number: str) -> WorkOrder | None:
    async with sessions() as session:
        return await session.scalar(
            select(WorkOrder).where(WorkOrder.number == number).options(selectinload(WorkOrder.events))
        )
