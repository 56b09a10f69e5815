"""The built-in work-order backend: create an order idempotently from a finished intake, or attach
it to the citizen's open order for the same matter, or screen it as a repeat of a closed one."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, selectinload

from common import sms
from common.china_time import CHINA_TZ
from common.payloads import IntakeFields
from common.text import similarity
from handoff.deadlines import due_date
from handoff.models import WorkOrder, WorkOrderEvent
from profiles import Profile
from storage.base import utcnow
from storage.conversations import Message
from storage.db import UnitOfWork, in_session

# Orders a new request can still be attached to; replied and closed ones are done, withdrawn ones gone.
OPEN_STATUSES = ("created", "dispatched", "signed", "extended", "returned", "reopened")
CLOSED_STATUSES = ("replied", "closed")
# Share of a new description's character bigrams absent from the closed order: below it, no new facts.
NEW_FACTS_MIN = 0.35
TRANSCRIPT_MESSAGES = 60

# Built once: creation runs on the citizen's confirming turn, and building these statements cost
# about as much as running them.
_BY_INTAKE = select(WorkOrder).where(WorkOrder.intake_id == bindparam("intake_id"))
_SAME_CONTACT = (
    select(WorkOrder)
    .where(
        WorkOrder.profile == bindparam("profile"),
        WorkOrder.contact_key == bindparam("key"),
        WorkOrder.category == bindparam("category"),
        WorkOrder.status.in_(OPEN_STATUSES + CLOSED_STATUSES),
    )
    .order_by(WorkOrder.id.desc())
    .limit(20)
)
_LAST_MESSAGES = (
    select(Message.created_at, Message.direction, Message.text, Message.payload)
    .where(Message.conversation_id == bindparam("conversation_id"))
    .order_by(Message.id.desc())
    .limit(TRANSCRIPT_MESSAGES)
)
_INSERT_ORDER = insert(WorkOrder.__table__).returning(WorkOrder.__table__.c.id)
_SET_NUMBER = update(WorkOrder.__table__).where(WorkOrder.__table__.c.id == bindparam("order_id"))
_INSERT_EVENT = insert(WorkOrderEvent.__table__)


def contact_key(phone: str | None) -> str | None:
    """A stable pseudonym for a contact number, so repeats are found without searching by phone."""
    digits = re.sub(r"\D", "", phone or "")
    if not digits:
        return None
    return hashlib.sha256(f"hotline12345-contact:{digits}".encode()).hexdigest()[:32]


def new_facts_share(new: str, old: str) -> float:
    grams = {new[i : i + 2] for i in range(len(new) - 1)}
    if not grams:
        return 0.0
    return len(grams - {old[i : i + 2] for i in range(len(old) - 1)}) / len(grams)


class IntakeError(ValueError):
    """The bot's intake payload is incomplete or names an unknown category."""


@dataclass(frozen=True)
class Receipt:
    """What happened to an intake, and what the citizen is told."""

    number: str
    category_label: str
    limit_working_days: int
    due_at: dt.datetime
    urgent: bool
    created: bool
    outcome: str = "created"  # created | attached (to an open order) | repeat (of a closed one, screened)
    urgent_note: str | None = None
    confidential: bool = False
    repeat_message: str | None = None
    anonymous: bool = False

    def citizen_text(self) -> str:
        due = self.due_at.astimezone(CHINA_TZ)
        if self.outcome == "repeat":
            return f"{self.repeat_message}（原工单号：{self.number}）"
        if self.outcome == "attached":
            return (
                f"您反映的事项与正在办理中的工单{self.number}是同一件事，已将本次反映的内容补充到该工单，"
                f"不再重复登记。承办单位会在{due.year}年{due.month}月{due.day}日前答复您。"
            )
        text = f"您的{self.category_label}诉求已受理，工单号：{self.number}。"
        if self.urgent_note:
            text += self.urgent_note
        elif self.urgent:
            text += "该诉求已标记为紧急，将优先派发处理。"
        text += f"承办单位将在{self.limit_working_days}个工作日内（{due.year}年{due.month}月{due.day}日前）办理并答复您。"
        if self.confidential:  # the citizen asked for it: a rule of its own
            text += "已按您的要求对您的个人信息保密。"
        elif self.anonymous:  # only that no name is recorded: promise nothing more
            text += "已按匿名受理。"
        return text + "请记好工单号，以便查询进度。"

    def sms(self) -> dict[str, Any] | None:
        """The receipt as the SMS acknowledgement template takes it (common/sms.py ACK): one short SMS
        with the number and the date. None where the full wording matters (an urgent kind's dispatch
        promise, an attached or repeated request): that goes as written."""
        if self.outcome != "created" or self.urgent_note:
            return None
        notes = [note for flag, note in ((self.urgent, "已标记为紧急"), (self.confidential, "个人信息将保密"),
                                         (self.anonymous and not self.confidential, "已按匿名受理")) if flag]
        due = self.due_at.astimezone(CHINA_TZ)
        return sms.body(sms.ACK, self.citizen_text(), category=self.category_label, no=self.number,
                        deadline=f"{due:%Y-%m-%d}", note="，".join(notes) or "请记好工单号")


def _receipt(order: WorkOrder, profile: Profile, *, created: bool, outcome: str = "created") -> Receipt:
    spec = profile.categories.get(order.category)
    rule = profile.urgent_rule(order.urgent_reason)
    repeat = profile.screen_rule("repeat")
    return Receipt(
        order.number or "",
        spec.label if spec else order.category,
        order.limit_working_days,
        order.due_at,
        order.urgent,
        created,
        outcome,
        rule.citizen_note() if rule else None,
        order.confidential,
        repeat.message if repeat else "该诉求已办结，同一事实和理由不再重复受理。",
        order.anonymous,
    )


def _transcript(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """What was said, with what the citizen attached (WeChat pictures, voice: media ids and links)."""
    lines = []
    for m in messages:
        attachments = [a for a in (m.payload or {}).get("attachments", ()) if a.get("type") != "event"]
        if m.text or attachments:
            author = "citizen" if m.direction == "in" else (m.payload or {}).get("author") or "bot"  # or an agent
            line = {"at": m.created_at.isoformat(), "from": author, "text": m.text}
            lines.append(line | {"attachments": attachments} if attachments else line)
    return lines


async def create_from_intake(
    db: UnitOfWork | async_sessionmaker[AsyncSession],
    intake: IntakeFields,
    profile: Profile,
    *,
    channel: str,
    conversation_id: int | None,
    now: dt.datetime | None = None,
) -> Receipt:
    """Create the work order for an intake, or return the existing one for the same intake id.
    `db` runs it as one unit of work: the router's UnitOfWork, or plain sessions."""
    intake_id = str(intake.get("intake_id") or "")
    category = intake.get("category")
    if not intake_id or category not in profile.categories:
        raise IntakeError(f"intake without id or with category {category!r} not accepted by {profile.id}")
    now = now or utcnow()
    transact = db if isinstance(db, UnitOfWork) else functools.partial(in_session, db)

    def work(session: Session) -> Receipt:
        return _create(session, intake, profile, channel=channel, conversation_id=conversation_id, now=now)

    try:
        return await transact(work)
    except IntegrityError:  # a concurrent submit of the same intake won the race: return its order
        return await transact(work)


def _create(
    session: Session,
    intake: IntakeFields,
    profile: Profile,
    *,
    channel: str,
    conversation_id: int | None,
    now: dt.datetime,
) -> Receipt:
    intake_id = str(intake["intake_id"])
    category = str(intake["category"])
    spec = profile.categories[category]
    urgent = bool(intake.get("urgent"))
    key = contact_key(intake.get("phone"))
    existing = session.scalar(_BY_INTAKE, {"intake_id": intake_id})
    if existing is not None:
        return _receipt(existing, profile, created=False)
    if key is not None:
        earlier = _same_matter(session, profile, key, category, intake)
        if earlier is not None:
            receipt = _fold_into(earlier, profile, intake, channel, now)
            if receipt is not None:
                return receipt
    transcript: list[dict[str, Any]] = []
    if conversation_id is not None:
        rows = session.execute(_LAST_MESSAGES, {"conversation_id": conversation_id}).all()
        transcript = _transcript(rows[::-1])
    rule = profile.urgent_rule(intake.get("urgent_rule")) if urgent else None
    dispatch_due_at = now + dt.timedelta(hours=profile.dispatch_hours)
    due_at = due_date(now, spec.limit_working_days, count_start_day=profile.count_start_day)
    if rule is not None:
        if rule.immediate:
            dispatch_due_at = now
        for hours in (rule.dispatch_hours, rule.onsite_hours, (rule.sign_minutes or 0) / 60 or None):
            if hours is not None:  # on site in 2 h or signed in 30 min means dispatched before then
                dispatch_due_at = min(dispatch_due_at, now + dt.timedelta(hours=hours))
        if rule.resolve_hours is not None:
            due_at = min(due_at, now + dt.timedelta(hours=rule.resolve_hours))
    anonymous = bool(intake.get("anonymous"))
    values: dict[str, Any] = {
        "intake_id": intake_id,
        "profile": profile.id,
        "channel": channel,
        "conversation_id": conversation_id,
        "category": category,
        "urgent": urgent,
        # screening_doubt: a refusal rule nearly applied (e.g. legal_procedure); the dispatcher decides.
        # callback: a 回拨 order filed because nobody took the chat (why: hours, nobody online, the wait).
        "facts": {k: intake.get(k) for k in ("content", "event_time", "place", "screening_doubt", "callback")
                  if k in ("content", "event_time", "place") or intake.get(k)},
        "contact_phone": intake.get("phone"),
        "contact_name": None if anonymous else intake.get("name"),
        "anonymous": anonymous,
        "transcript": transcript,
        "status": "created",
        "created_at": now,
        "dispatch_due_at": dispatch_due_at,
        "due_at": due_at,
        "limit_working_days": spec.limit_working_days,
        "confidential": bool(intake.get("confidential")),  # 匿名 is not 保密: no name, no promise
        "contact_id_number": intake.get("id_number"),
        "urgent_reason": rule.id if rule else None,
        "contact_key": key,
        "supplements": [],
        "repeat_count": 0,
        "escalated": False,
    }
    # Plain statements, not the ORM's unit of work: its two flushes (the number needs the id) were
    # most of this function's time.
    order_id = session.execute(_INSERT_ORDER, [values]).scalar_one()  # IntegrityError: same intake id, a moment ago
    number = f"{profile.work_order_prefix}{now.astimezone(CHINA_TZ):%Y%m%d}{order_id:06d}"
    session.execute(_SET_NUMBER, {"order_id": order_id, "number": number})
    session.execute(_INSERT_EVENT, [{"work_order_id": order_id, "status": "created", "note": f"{channel} intake", "at": now}])
    return _receipt(WorkOrder(**values, id=order_id, number=number), profile, created=True)


def _same_matter(
    session: Session, profile: Profile, key: str, category: str, intake: dict[str, Any]
) -> WorkOrder | None:
    """The citizen's most recent order for the same matter: same contact, kind and place, similar content."""
    rows = session.scalars(_SAME_CONTACT, {"profile": profile.id, "key": key, "category": category})
    content, place = str(intake.get("content") or ""), str(intake.get("place") or "")
    for order in rows:
        old_place = str(order.facts.get("place") or "")
        same_place = not place or not old_place or place == old_place or similarity(place, old_place) >= 0.5
        if same_place and similarity(content, str(order.facts.get("content") or "")) >= profile.repeats.similarity:
            return order
    return None


def _fold_into(order: WorkOrder, profile: Profile, intake: dict[str, Any], channel: str, now: dt.datetime) -> Receipt | None:
    """Attach a repeat to an open order, or screen a closed one's repeat that brings no new facts.
    None: a closed matter with new facts, which becomes a new order."""
    intake_id = str(intake["intake_id"])
    content = str(intake.get("content") or "")
    if order.status in CLOSED_STATUSES and new_facts_share(content, str(order.facts.get("content") or "")) >= NEW_FACTS_MIN:
        return None
    seen = any(s.get("intake_id") == intake_id for s in order.supplements or [])
    if not seen:
        order.repeat_count += 1
        entry = {"at": now.isoformat(), "channel": channel, "intake_id": intake_id, "text": content, "kind": "repeat"}
        order.supplements = [*(order.supplements or []), entry]
        order.events.append(WorkOrderEvent(status="repeat", note=f"repeat {order.repeat_count} via {channel}", at=now))
        if order.repeat_count > profile.repeats.escalate_after and not order.escalated:
            order.escalated = True
            order.events.append(
                WorkOrderEvent(status="escalated", note=f"{profile.repeats.article}: {order.repeat_count} repeats", at=now)
            )
    outcome = "attached" if order.status in OPEN_STATUSES else "repeat"
    return _receipt(order, profile, created=False, outcome=outcome)


async def get_by_number(sessions: async_sessionmaker[AsyncSession], number: str) -> WorkOrder | None:
    async with sessions() as session:
        return await session.scalar(
            select(WorkOrder).where(WorkOrder.number == number).options(selectinload(WorkOrder.events))
        )
