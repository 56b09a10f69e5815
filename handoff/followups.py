"""What a citizen can do to a request already made, from any channel: withdraw it (濠江 三(六)) or add
new facts to it (濠江 三(四)6). Only the citizen's own orders are touched: those made in this
conversation, or registered with a contact phone the citizen gives again."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from common.china_time import CHINA_TZ
from handoff.deadlines import due_date
from handoff.models import WorkOrder, WorkOrderEvent
from handoff.workorders import CLOSED_STATUSES, OPEN_STATUSES, contact_key
from profiles import Profile
from storage.base import utcnow

NOT_YOURS = (
    "没有在您名下找到工单{number}。为保护诉求人信息，只能处理您本人提交的工单；"
    "如果是在电话、短信等其他渠道提交的，请同时发送登记时留的联系电话。"
)
NONE_OPEN = "没有找到您正在办理中的工单。如需反映新的问题，请直接描述。"


@dataclass(frozen=True)
class Answer:
    """What the citizen is told, with buttons where they must choose."""

    text: str
    buttons: tuple[dict[str, str], ...] = ()


def _day(when: dt.datetime) -> str:
    local = when.astimezone(CHINA_TZ)
    return f"{local.year}年{local.month}月{local.day}日"


async def own_orders(
    session: AsyncSession, profile: Profile, conversation_id: int, phones: Iterable[str | None]
) -> list[WorkOrder]:
    """The citizen's orders, newest first: made in this conversation or with one of these contact phones."""
    keys = [k for k in (contact_key(p) for p in phones) if k]
    owner = WorkOrder.conversation_id == conversation_id
    if keys:
        owner = or_(owner, WorkOrder.contact_key.in_(keys))
    rows = await session.scalars(
        select(WorkOrder)
        .where(WorkOrder.profile == profile.id, owner)
        .order_by(WorkOrder.id.desc())
        .limit(50)
        .options(selectinload(WorkOrder.events))
    )
    return list(rows.all())


def _pick(orders: list[WorkOrder], number: str | None, verb: str) -> WorkOrder | str:
    """The order meant, or what to tell the citizen when it is not clear which."""
    if number:
        match = next((o for o in orders if o.number == number), None)
        return match if match is not None else NOT_YOURS.format(number=number)
    open_orders = [o for o in orders if o.status in OPEN_STATUSES]
    if not open_orders:
        return NONE_OPEN
    if len(open_orders) > 1:
        numbers = "、".join(o.number or "" for o in open_orders[:5])
        return f"您有{len(open_orders)}个正在办理中的工单：{numbers}。请告诉我要{verb}哪一个（发送工单号即可）。"
    return open_orders[0]


async def withdraw(
    sessions: async_sessionmaker[AsyncSession],
    profile: Profile,
    *,
    conversation_id: int,
    number: str | None,
    phones: Iterable[str | None],
    channel: str,
    confirmed: bool = True,
    now: dt.datetime | None = None,
) -> Answer:
    """Withdraw the citizen's open order. Unconfirmed, it names the order and asks first: a withdrawal
    cannot be undone, and a progress question with a number must never withdraw anything."""
    now = now or utcnow()
    if not profile.withdrawal.allowed:
        return Answer(f"按照{profile.short_name}的规定，已受理的诉求不能在线撤回，如有疑问请拨打12345热线。")
    phones = list(phones)
    async with sessions() as session:
        picked = _pick(await own_orders(session, profile, conversation_id, phones), number, "撤回")
        if isinstance(picked, str):
            return Answer(picked)
        if picked.status == "withdrawn":
            return Answer(f"工单{picked.number}已经撤回，无需重复操作。")
        if picked.status in CLOSED_STATUSES:
            return Answer(f"工单{picked.number}已办理完毕，无需撤回。如对办理结果有意见，可以在回访时评价。")
        if not confirmed:
            entities = {"order_number": picked.number}
            phone = next((p for p in phones if p), None)
            if phone and picked.conversation_id != conversation_id:
                entities["owner_phone"] = phone  # ownership shown by phone must hold at confirmation too
            summary = str(picked.facts.get("content") or "")[:40]
            return Answer(
                f"您要撤回工单{picked.number}（{summary}）吗？撤回后承办单位将不再处理。",
                (
                    {"title": "确认撤回", "payload": f"/confirm_withdraw{json.dumps(entities, ensure_ascii=False)}"},
                    {"title": "不撤回", "payload": "/deny"},
                ),
            )
        picked.status = "withdrawn"
        picked.events.append(WorkOrderEvent(status="withdrawn", note=f"by citizen via {channel}", at=now))
        await session.commit()
        return Answer(f"已为您撤回工单{picked.number}，承办单位将不再处理。如有新的问题，欢迎随时反映。")


async def supplement(
    sessions: async_sessionmaker[AsyncSession],
    profile: Profile,
    *,
    conversation_id: int,
    number: str | None,
    phones: Iterable[str | None],
    text: str,
    channel: str,
    now: dt.datetime | None = None,
) -> Answer:
    """Add new facts to the citizen's open order; the clock restarts where the profile says so."""
    now = now or utcnow()
    async with sessions() as session:
        picked = _pick(await own_orders(session, profile, conversation_id, phones), number, "补充")
        if isinstance(picked, str):
            return Answer(picked)
        if picked.status not in OPEN_STATUSES:
            return Answer(f"工单{picked.number}已办结或已撤回，不能再补充。如有新的情况，请直接重新反映。")
        entry = {"at": now.isoformat(), "channel": channel, "text": text[:2000], "kind": "supplement"}
        picked.supplements = [*(picked.supplements or []), entry]
        note = f"supplement via {channel}"
        reply = f"已将您补充的情况添加到工单{picked.number}，承办单位会一并处理。"
        if profile.withdrawal.supplement_restarts_clock:
            picked.due_at = due_date(now, picked.limit_working_days, count_start_day=profile.count_start_day)
            note += f"; clock restarted ({profile.withdrawal.supplement_article})"
            reply += f"根据规定，办理时限从今天重新计算，承办单位将在{_day(picked.due_at)}前答复您。"
        picked.events.append(WorkOrderEvent(status="supplemented", note=note, at=now))
        await session.commit()
        return Answer(reply)
