"""What a citizen can do to a request already made, from any channel: withdraw it (濠江 三(六)) or add
new facts to it (濠江 三(四)6). Only the citizen's own orders are touched: those of the same sender
identity (this conversation: the same WeChat openid, web session or SMS number; an SMS sender's number
is also the registered phone of their orders). A phone number or order number typed from elsewhere
proves nothing: a one-time code is sent by SMS to the order's registered phone, and nothing of the
order is shown or changed before the code comes back (枝江 第二十五条: never reveal a reporter)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from common import sms
from common.china_time import CHINA_TZ
from handoff.deadlines import due_date
from handoff.models import FollowupCode, WorkOrder, WorkOrderEvent
from handoff.workorders import CLOSED_STATUSES, OPEN_STATUSES, contact_key
from profiles import Profile
from storage.base import utcnow
from storage.outbox import enqueue

CODE_MINUTES = 10  # a code's life
CODE_TRIES = 5  # wrong codes before it is void
PROOF_MINUTES = 30  # after a right code, the orders of that phone count as the citizen's in this conversation
CODES_PER_DAY = 3  # codes sent per conversation, and per registered phone, in 24 hours (no SMS bombing)
NOT_YOURS = (
    "没有在您本次会话中找到工单{number}。为保护诉求人信息，只能处理您本人提交的工单；"
    "如果是在其他渠道提交的，请发送工单号或登记时留的手机号，我们会向登记的手机号发送验证码。"
)
NONE_OPEN = "没有找到您正在办理中的工单。如需反映新的问题，请直接描述。"
CODE_SENT = (
    "为保护诉求人信息，需要先验证身份。如果工单登记了这个手机号，我们已向登记的手机号发送了6位验证码"
    "（{minutes}分钟内有效），请直接回复验证码。验证通过前不会显示或改动任何工单。"
)
WRONG_CODE = "验证码不正确，还可以再试{left}次。"
CODE_VOID = "验证码错误次数过多，已失效。如需办理，请重新发起，或拨打12345热线。"
_CODE = re.compile(r"(?:验证码)?[:：是]?\s*(\d{6})")


@dataclass(frozen=True)
class Answer:
    """What the citizen is told, with buttons where they must choose; `queued`: an SMS went to the outbox."""

    text: str
    buttons: tuple[dict[str, str], ...] = ()
    queued: bool = False


def _day(when: dt.datetime) -> str:
    local = when.astimezone(CHINA_TZ)
    return f"{local.year}年{local.month}月{local.day}日"


def _hash(code: str, salt: str | None = None) -> str:
    """A code kept as salt$sha256: a database reader cannot reuse a live code."""
    salt = salt or secrets.token_hex(8)
    return f"{salt}${hashlib.sha256(f'{salt}:{code}'.encode()).hexdigest()}"


def _code_matches(stored: str, code: str) -> bool:
    salt, _, _ = stored.partition("$")
    return hmac.compare_digest(stored, _hash(code, salt))


async def proven_keys(
    session: AsyncSession, conversation_id: int, sender_phone: str | None, now: dt.datetime
) -> list[str]:
    """Contact keys whose orders are this citizen's: the SMS sender's own number, and phones proven
    by a code in this conversation within PROOF_MINUTES."""
    keys = [k for k in (contact_key(sender_phone),) if k]
    since = now - dt.timedelta(minutes=PROOF_MINUTES)
    proven = await session.scalars(select(FollowupCode.contact_key).where(
        FollowupCode.conversation_id == conversation_id, FollowupCode.verified_at >= since))
    return keys + list(proven)


async def own_orders(
    session: AsyncSession, profile: Profile, conversation_id: int, keys: list[str]
) -> list[WorkOrder]:
    """The citizen's orders, newest first: made in this conversation or with a proven contact key."""
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


async def _challenge(
    session: AsyncSession,
    profile: Profile,
    *,
    conversation_id: int,
    number: str | None,
    phone: str | None,
    action: dict[str, Any],
    now: dt.datetime,
) -> Answer:
    """Send a code to the registered phone of the order meant (by number, or the open orders of a typed
    phone). The citizen is told the same whether or not such an order exists: nothing is revealed."""
    query = select(WorkOrder.contact_phone, WorkOrder.contact_key).where(
        WorkOrder.profile == profile.id, WorkOrder.contact_key.is_not(None))
    if number:
        query = query.where(WorkOrder.number == number)
    else:
        query = query.where(WorkOrder.contact_key == contact_key(phone), WorkOrder.status.in_(OPEN_STATUSES))
    target = (await session.execute(query.limit(1))).first()
    answer = Answer(CODE_SENT.format(minutes=CODE_MINUTES))
    if target is None or not target.contact_phone:
        return answer
    day_ago = now - dt.timedelta(days=1)
    sent = select(func.count()).select_from(FollowupCode).where(FollowupCode.created_at >= day_ago)
    if (await session.scalar(sent.where(FollowupCode.conversation_id == conversation_id)) >= CODES_PER_DAY
            or await session.scalar(sent.where(FollowupCode.contact_key == target.contact_key)) >= CODES_PER_DAY):
        return answer
    code = f"{secrets.randbelow(10**6):06d}"
    session.add(FollowupCode(conversation_id=conversation_id, contact_key=target.contact_key, code_hash=_hash(code),
                             action=action, attempts=0, created_at=now,
                             expires_at=now + dt.timedelta(minutes=CODE_MINUTES)))
    # The provider's verification-code template carries it (docs/sms_templates.md).
    enqueue(session, channel="sms", recipient=target.contact_phone, not_before=now,
            body=sms.code_body(code, CODE_MINUTES))
    await session.commit()
    return Answer(answer.text, queued=True)


async def answer_code(
    sessions: async_sessionmaker[AsyncSession],
    profile: Profile,
    *,
    conversation_id: int,
    text: str,
    sender_phone: str | None,
    channel: str,
    now: dt.datetime | None = None,
) -> Answer | None:
    """A citizen's reply to a code sent in this conversation; None when no code is awaited or the
    text is not one (the bot answers it). A right code does what was asked; a wrong one costs a try."""
    typed = _CODE.fullmatch(unicodedata.normalize("NFKC", text).strip())
    if typed is None:
        return None
    now = now or utcnow()
    async with sessions() as session:
        pending = await session.scalar(
            select(FollowupCode)
            .where(FollowupCode.conversation_id == conversation_id, FollowupCode.verified_at.is_(None),
                   FollowupCode.expires_at > now, FollowupCode.attempts < CODE_TRIES)
            .order_by(FollowupCode.id.desc()).limit(1))
        if pending is None:
            return None
        if not _code_matches(pending.code_hash, typed.group(1)):
            pending.attempts += 1
            await session.commit()
            left = CODE_TRIES - pending.attempts
            return Answer(WRONG_CODE.format(left=left) if left else CODE_VOID)
        pending.verified_at = now
        action = dict(pending.action)
        await session.commit()
    common: dict[str, Any] = {"conversation_id": conversation_id, "number": action.get("number"), "phone": None,
                              "sender_phone": sender_phone, "channel": channel, "now": now}
    if action.get("kind") == "supplement":
        return await supplement(sessions, profile, text=str(action.get("text") or ""), **common)
    return await withdraw(sessions, profile, confirmed=False, **common)


async def _mine(
    session: AsyncSession,
    profile: Profile,
    *,
    conversation_id: int,
    number: str | None,
    phone: str | None,
    sender_phone: str | None,
    verb: str,
    action: dict[str, Any] | None,
    now: dt.datetime,
) -> WorkOrder | Answer:
    """The citizen's order meant, or the answer: which one, none, or a code sent to prove a typed
    number or phone (`action` None: no code, e.g. at a confirmation, which needs the proof already)."""
    keys = await proven_keys(session, conversation_id, sender_phone, now)
    picked = _pick(await own_orders(session, profile, conversation_id, keys), number, verb)
    if not isinstance(picked, str):
        return picked
    unproven_phone = phone if contact_key(phone) not in keys else None
    if action is not None and (number or (unproven_phone and picked == NONE_OPEN)):
        return await _challenge(session, profile, conversation_id=conversation_id, number=number,
                                phone=unproven_phone, action=action, now=now)
    return Answer(picked)


async def withdraw(
    sessions: async_sessionmaker[AsyncSession],
    profile: Profile,
    *,
    conversation_id: int,
    number: str | None,
    phone: str | None,
    sender_phone: str | None,
    channel: str,
    confirmed: bool = True,
    now: dt.datetime | None = None,
) -> Answer:
    """Withdraw the citizen's open order. Unconfirmed, it names the order and asks first: a withdrawal
    cannot be undone, and a progress question with a number must never withdraw anything. A
    confirmation acts only on an order already proven the citizen's (a typed phone is ignored)."""
    now = now or utcnow()
    if not profile.withdrawal.allowed:
        return Answer(f"按照{profile.short_name}的规定，已受理的诉求不能在线撤回，如有疑问请拨打12345热线。")
    async with sessions() as session:
        picked = await _mine(session, profile, conversation_id=conversation_id, number=number,
                             phone=None if confirmed else phone, sender_phone=sender_phone, verb="撤回",
                             action=None if confirmed else {"kind": "withdraw", "number": number}, now=now)
        if isinstance(picked, Answer):
            return picked
        if picked.status == "withdrawn":
            return Answer(f"工单{picked.number}已经撤回，无需重复操作。")
        if picked.status in CLOSED_STATUSES:
            return Answer(f"工单{picked.number}已办理完毕，无需撤回。如对办理结果有意见，可以在回访时评价。")
        if not confirmed:
            entities = {"order_number": picked.number}
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
    phone: str | None,
    sender_phone: str | None,
    text: str,
    channel: str,
    now: dt.datetime | None = None,
) -> Answer:
    """Add new facts to the citizen's open order; the clock restarts where the profile says so. For an
    order not yet proven theirs, the words wait with the code and are added once it comes back."""
    now = now or utcnow()
    async with sessions() as session:
        picked = await _mine(session, profile, conversation_id=conversation_id, number=number, phone=phone,
                             sender_phone=sender_phone, verb="补充",
                             action={"kind": "supplement", "number": number, "text": text[:2000]}, now=now)
        if isinstance(picked, Answer):
            return picked
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
