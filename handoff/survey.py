"""The satisfaction survey (回访 / 好差评) after a work order is replied to, and its default rule.

Timers are rows: `surveys.send_at` (when the SMS may go: outside quiet hours, Asia/Shanghai) and
`surveys.due_at` (end of the reply window, counted from when the provider accepted the SMS).
`SurveyService.tick` sends what is due and applies the profile's default rating to what expired,
each by a conditional UPDATE on the status, so with several replicas and across restarts a survey
is sent once and defaulted once (../shared/reference/handoff.md §3.5).

Rules per profile (profiles/*.yml `survey:`): 济源 第十四条 (no answer → 基本满意; redo + 2 working
days), 桂林 第十四条(二) (SMS, 24 h → 满意), 濠江 四(四)(五) (within 1 working day; a mistaken rating
may be corrected), 枝江 第二十条 (unsatisfied again after a redo → expert review).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.china_time import CHINA_TZ
from handoff import lifecycle
from handoff.deadlines import due_date
from handoff.models import Revisit, SmsOptOut, Survey, WorkOrder, WorkOrderEvent
from handoff.notify import CHANNEL as TICKET_WEBHOOK
from profiles import Profile, SurveyRules
from profiles import load as load_profile
from storage.base import utcnow
from storage.conversations import Conversation, Message
from storage.inbox import InboxKey
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
ACTIVE = ("queued", "open")  # the citizen can answer
LATE_DAYS = 7  # a reply this long after the window is still matched to the survey (and answered)

# One 70-character SMS with the signature where the answer's summary allows. No "回复TD退订": that line
# belongs to promotional SMS (Alibaba's template rules); 退订/TD is still honoured when a citizen sends it.
SURVEY_TEXT = "您的工单尾号{short}已办理：{summary}。回复1满意2基本满意3不满意，{hours}小时未回复视为{default}"
MIN_SUMMARY = 6
ACK_GOOD = "感谢评价！工单尾号{short}已记录：{label}。"
ACK_CORRECT_HINT = "如有误，{hours}小时内可回复更正。"
ACK_REDO = "工单尾号{short}已记录：{label}。工单将退回承办单位重新办理，工作人员会电话回访您。"
ACK_EXPERT = "工单尾号{short}已记录：{label}。该工单将进行专业评价复核，工作人员会电话联系您。"
ACK_REVISIT = "工单尾号{short}已记录：{label}。工作人员会电话回访您，了解具体情况。"
ACK_CLOSE = "工单尾号{short}已记录：{label}。感谢您的反馈。"
MULTI_HINT = "您有多张待评价工单，本次计入最近的尾号{short}；评价其他工单请回复数字加尾号，如“1 {other}”。"
CORRECTED = "工单尾号{short}的评价已更正为：{label}。"
NO_CORRECTION = "工单尾号{short}已评价为{label}，不能再修改。如有问题请拨打12345。"
LATE = "工单尾号{short}的评价时间已过，已按{label}记录。如仍有问题，请拨打12345或回复短信说明。"
CLARIFY = "抱歉，没看懂您的评价。请回复数字：1满意、2基本满意、3不满意。"
OPTOUT_ACK = "您已退订满意度回访短信，今后不再发送。如需反映问题，请拨打12345。"

Clock = Callable[[], dt.datetime]


# --- reading a reply -----------------------------------------------------------------------------

_OPTOUT = {"TD", "T", "R", "N", "退订", "拒收", "退订短信", "退订回访"}
_DIGITS = {"1": "satisfied", "2": "basically_satisfied", "3": "unsatisfied"}
# Checked in order: longer phrases first, so 不满意 is not read as 满意 and 差不多 not as 差.
_WORDS = (
    (("非常不满意", "很不满意", "特别不满意", "极不满意"), "very_unsatisfied"),
    (("非常满意", "很满意", "十分满意", "特别满意"), "very_satisfied"),
    (("基本满意", "差不多", "一般", "还行", "还可以", "凑合"), "basically_satisfied"),
    (("不满意", "不太满意", "差评", "不好", "差"), "unsatisfied"),
    (("满意", "好评", "好"), "satisfied"),
)
_PUNCT = re.compile(r"[\s.,，。!！?？~～、:：;；\"'“”‘’()（）【】\[\]<>《》#＃*-]+")
_ORDER_NO = re.compile(r"[A-Za-z]{0,4}(\d{4,})")
MAX_RATING_CHARS = 20  # longer messages are someone writing about something, not a rating


@dataclass(frozen=True)
class Parsed:
    kind: Literal["optout", "rating", "unreadable"]
    rating: str | None = None
    short: str | None = None  # last four digits of the order number the citizen named
    chars: int = 0  # length of the message without spaces and punctuation


def parse_reply(text: str) -> Parsed:
    """Read 1/2/3 (also full-width), 非常满意 … 非常不满意, 好/差, an optional order number, 退订/TD."""
    norm = unicodedata.normalize("NFKC", text or "")
    spaced = _PUNCT.sub(" ", norm).strip()
    compact = spaced.replace(" ", "")
    if compact.upper() in _OPTOUT:
        return Parsed("optout", chars=len(compact))
    numbers = _ORDER_NO.findall(spaced)
    if len(numbers) > 1:
        return Parsed("unreadable", chars=len(compact))
    short = numbers[0][-4:] if numbers else None
    rest = _ORDER_NO.sub(" ", spaced).replace(" ", "") if numbers else compact
    if not rest or len(rest) > MAX_RATING_CHARS:
        return Parsed("unreadable", short=short, chars=len(compact))
    digits = re.findall(r"\d", rest)
    if len(digits) > 1 or (digits and digits[0] not in _DIGITS):
        return Parsed("unreadable", short=short, chars=len(compact))
    by_digit = _DIGITS[digits[0]] if digits else None
    by_word = next((rating for words, rating in _WORDS if any(w in rest for w in words)), None)
    if by_digit and by_word and (by_digit in BAD) != (by_word in BAD):
        return Parsed("unreadable", short=short, chars=len(compact))  # "1 不满意": ask rather than guess
    rating = by_word or by_digit
    if rating is None:
        return Parsed("unreadable", short=short, chars=len(compact))
    return Parsed("rating", rating=rating, short=short, chars=len(compact))


# --- timing --------------------------------------------------------------------------------------


def next_allowed(now: dt.datetime, rules: SurveyRules) -> dt.datetime:
    """now, or the end of the quiet hours (local time) if now falls inside them."""
    local = now.astimezone(CHINA_TZ)
    if not rules.is_quiet(local.hour) or rules.quiet_hours is None:
        return now
    end = local.replace(hour=rules.quiet_hours[1], minute=0, second=0, microsecond=0)
    if end <= local:
        end += dt.timedelta(days=1)
    return end.astimezone(dt.UTC)


def short_number(number: str | None) -> str:
    return (number or "")[-4:]


def summarise(answer: str, limit: int) -> str:
    text = re.sub(r"\s+", "", answer).rstrip("。.")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the service ---------------------------------------------------------------------------------


@dataclass
class _Target:
    survey: Survey
    number: str


class SurveyService:
    """Schedules, sends, reads and defaults surveys; one per gateway, safe to run on every replica."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        profile: Profile,
        *,
        clock: Clock = utcnow,
        on_enqueued: Callable[[], None] | None = None,
        batch: int = 500,
        sign_name: str = "12345热线",
        segment_chars: int = 70,
        webhook_url: str = "",
    ) -> None:
        self.webhook_url = webhook_url
        self.sign_name = sign_name
        self.segment_chars = segment_chars
        self.sessions = sessions
        self.profile = profile
        self.clock = clock
        self.on_enqueued = on_enqueued
        self.batch = batch

    def profile_for(self, profile_id: str) -> Profile:
        return self.profile if profile_id == self.profile.id else load_profile(profile_id)

    def wake(self) -> None:
        if self.on_enqueued is not None:
            self.on_enqueued()

    # -- work-order events ---------------------------------------------------------------------

    async def record_event(
        self,
        number: str,
        event: str,
        *,
        note: str = "",
        answer: str = "",
        days: int | None = None,
        event_key: str | None = None,
        source: str = "api",
    ) -> tuple[WorkOrder | None, bool]:
        """Apply a handling unit's event; `replied` schedules the survey in the same transaction.
        Returns (order, applied); applied is False for a repeated event key."""
        if event not in lifecycle.PUBLIC_EVENTS:
            raise lifecycle.TransitionError(f"unknown event {event!r}; expected one of {lifecycle.PUBLIC_EVENTS}")
        if event == "replied" and not answer.strip():
            raise lifecycle.TransitionError("replied needs answer: the handling unit's answer to the citizen")
        now = self.clock()
        async with self.sessions() as session:
            order = await session.scalar(select(WorkOrder).where(WorkOrder.number == number))
            if order is None:
                return None, False
            if event_key:
                session.add(InboxKey(source=f"ticket:{source}", key=event_key[:160], payload={"event": event}))
                try:
                    await session.flush()
                except IntegrityError:
                    await session.rollback()
                    return await self._order(number), False
            profile = self.profile_for(order.profile)
            await lifecycle.apply(
                session, order, event, now=now, note=answer.strip() if event == "replied" else note,
                days=days, profile=profile,
            )
            if event == "replied":
                await self._schedule(session, order, answer.strip(), profile, now)
            await session.commit()
        return await self._order(number), True

    async def _order(self, number: str) -> WorkOrder | None:
        from handoff.workorders import get_by_number

        return await get_by_number(self.sessions, number)

    async def _schedule(
        self, session: AsyncSession, order: WorkOrder, answer: str, profile: Profile, now: dt.datetime
    ) -> None:
        rounds = await session.scalar(select(func.count(Survey.id)).where(Survey.work_order_id == order.id)) or 0
        if not order.contact_phone:
            await self.flag_revisit(session, f"nosms:{order.id}:{rounds + 1}", "no_sms_survey", order.id, None,
                                "没有联系电话，无法短信回访")
            return
        session.add(
            Survey(
                work_order_id=order.id,
                round=rounds + 1,
                phone=order.contact_phone,
                status="scheduled",
                answer=answer,
                send_at=next_allowed(now, profile.survey),
                history=[],
                defaulted=False,
                corrections=0,
                clarified=False,
                created_at=now,
            )
        )

    # -- timers ----------------------------------------------------------------------------------

    async def tick(self) -> dict[str, int]:
        """One pass: send surveys that are due, then default those whose window ended."""
        now = self.clock()
        return {"sent": await self.send_due(now), "defaulted": await self.apply_defaults(now),
                "overdue": await self.flag_overdue(now)}

    async def flag_overdue(self, now: dt.datetime) -> int:
        """A survey still not out after the profile's limit (济源: 3 working days; 濠江: 1) goes to a
        person as well; the SMS is still sent when it can be."""
        limit = self.profile.survey.send_within_working_days
        async with self.sessions() as session:
            rows = (
                await session.scalars(
                    select(Survey)
                    .where(Survey.status.in_(("scheduled", "queued")), Survey.created_at <= now - dt.timedelta(days=1))
                    .order_by(Survey.id)
                    .limit(self.batch)
                )
            ).all()
            flagged = 0
            for survey in rows:
                deadline = due_date(lifecycle.aware(survey.created_at), limit, count_start_day=False)
                key = f"overdue:{survey.id}"
                if now > deadline and await session.scalar(select(Revisit.id).where(Revisit.dedupe_key == key)) is None:
                    await self.flag_revisit(session, key, "survey_overdue", survey.work_order_id, survey.phone,
                                        f"回访短信超过{limit}个工作日仍未发出，请人工回访")
                    flagged += 1
            try:
                await session.commit()
            except IntegrityError:  # another replica flagged the same surveys at the same moment
                await session.rollback()
                return 0
        return flagged

    async def send_due(self, now: dt.datetime) -> int:
        rules = self.profile.survey
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    select(Survey, WorkOrder.number)
                    .join(WorkOrder, WorkOrder.id == Survey.work_order_id)
                    .where(Survey.status == "scheduled", Survey.send_at <= now)
                    .order_by(Survey.send_at)
                    .limit(self.batch)
                )
            ).all()
            if not rows:
                return 0
            later = next_allowed(now, rules)
            if later > now:  # quiet hours (e.g. the gateway was down until 23:00): wait for the morning
                await session.execute(
                    update(Survey)
                    .where(Survey.id.in_([s.id for s, _ in rows]), Survey.status == "scheduled")
                    .values(send_at=later)
                )
                await session.commit()
                return 0
            opted = set(
                await session.scalars(select(SmsOptOut.phone).where(SmsOptOut.phone.in_({s.phone for s, _ in rows})))
            )
            queued = 0
            for survey, number in rows:
                status = "opted_out" if survey.phone in opted else "queued"
                result = await session.execute(
                    update(Survey).where(Survey.id == survey.id, Survey.status == "scheduled").values(status=status)
                )
                if result.rowcount != 1:
                    continue  # another replica took it
                if status == "opted_out":
                    await self.flag_revisit(session, f"optout:{survey.id}", "no_sms_survey", survey.work_order_id,
                                        survey.phone, "市民已退订回访短信，请人工回访")
                    continue
                enqueue(
                    session,
                    channel="sms",
                    recipient=survey.phone,
                    body={"text": self.survey_text(number, survey.answer), "kind": "survey", "survey_id": survey.id},
                    dedupe_key=f"survey:{survey.id}",
                    not_before=now,
                )
                queued += 1
            await session.commit()
        if queued:
            self.wake()
        return queued

    def survey_text(self, number: str, answer: str) -> str:
        """Names the order, summarises the answer, gives the scale and the default; the summary is
        cut so that the whole fits one SMS with the 【signature】 (never below MIN_SUMMARY characters)."""
        rules = self.profile.survey
        fields = {"short": short_number(number), "hours": f"{rules.window_hours:g}",
                  "default": LABELS[rules.default_rating]}
        fixed = len(SURVEY_TEXT.format(summary="", **fields))
        room = self.segment_chars - len(self.sign_name) - 2 - fixed
        return SURVEY_TEXT.format(summary=summarise(answer, max(MIN_SUMMARY, room)), **fields)

    async def mark_sent(self, session: AsyncSession, survey_id: int, now: dt.datetime) -> None:
        """The provider accepted the survey SMS: the reply window starts now (in the sender's transaction)."""
        window = dt.timedelta(hours=self.profile.survey.window_hours)
        await session.execute(
            update(Survey)
            .where(Survey.id == survey_id, Survey.status == "queued")
            .values(status="open", sent_at=now, due_at=now + window)
        )

    async def mark_failed(self, session: AsyncSession, survey_id: int, why: str) -> None:
        """The survey SMS could not be sent or delivered: no default rating; a person phones instead
        (桂林 第十四条(二): 未通过自动回访的 … 以人工回访的方式进行)."""
        survey = await session.get(Survey, survey_id)
        result = await session.execute(
            update(Survey).where(Survey.id == survey_id, Survey.status.in_(ACTIVE)).values(status="failed")
        )
        if result.rowcount == 1 and survey is not None:
            await self.flag_revisit(session, f"survey-failed:{survey_id}", "survey_sms_failed", survey.work_order_id,
                                survey.phone, f"回访短信未送达：{why}"[:500])

    async def apply_defaults(self, now: dt.datetime) -> int:
        """Give every open survey whose window ended the profile's default rating, marked as defaulted.
        The UPDATE … WHERE status='open' … RETURNING decides which rows this call owns; the order's
        consequence is written in the same transaction, so it happens exactly once."""
        total = 0
        while True:
            async with self.sessions() as session:
                expired = (
                    await session.execute(
                        select(Survey.id, WorkOrder.profile)
                        .join(WorkOrder, WorkOrder.id == Survey.work_order_id)
                        .where(Survey.status == "open", Survey.due_at <= now)
                        .order_by(Survey.due_at)
                        .limit(self.batch)
                    )
                ).all()
                if not expired:
                    return total
                by_profile: dict[str, list[int]] = {}
                for survey_id, profile_id in expired:
                    by_profile.setdefault(profile_id, []).append(survey_id)
                for profile_id, ids in by_profile.items():
                    profile = self.profile_for(profile_id)
                    rating = profile.survey.default_rating
                    owned = (
                        await session.execute(
                            update(Survey)
                            .where(Survey.id.in_(ids), Survey.status == "open", Survey.due_at <= now)
                            .values(status="defaulted", rating=rating, defaulted=True, rated_at=now)
                            .returning(Survey.id, Survey.work_order_id)
                        )
                    ).all()
                    total += len(owned)
                    if rating in BAD:  # unusual, but a profile may say so: the full unsatisfied path
                        for survey_id, _ in owned:
                            survey = await session.get(Survey, survey_id)
                            order = await session.get(WorkOrder, survey.work_order_id) if survey else None
                            if survey is not None and order is not None:
                                await self._consequence(session, survey, order, rating, now, profile)
                        continue
                    await self._close_many(session, owned, rating, now)
                await session.commit()

    async def _close_many(
        self, session: AsyncSession, owned: list[Any], rating: str, now: dt.datetime
    ) -> None:
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

    # -- replies ---------------------------------------------------------------------------------

    async def handle_reply(self, session: AsyncSession, phone: str, text: str) -> bool:
        """Treat an SMS as a survey reply or an opt-out if it is one (in the caller's transaction,
        acknowledgements enqueued there too); False means it is for the bot."""
        now = self.clock()
        parsed = parse_reply(text)
        if parsed.kind == "optout":
            await self._opt_out(session, phone, text, now)
            return True
        targets = await self._targets(session, phone, now)
        if targets and await self._bot_asked_last(session, phone, targets):
            return False  # "1" answers the bot's latest choice (确认提交 …), not an older survey
        active = [t for t in targets if self._answerable(t.survey, now)]
        late = [t for t in targets if t not in active]
        if parsed.kind == "unreadable":
            if active and parsed.chars <= 15 and not any(t.survey.clarified for t in active):
                await session.execute(update(Survey).where(Survey.id == active[0].survey.id).values(clarified=True))
                self._note(active[0].survey, now, text, "unreadable")
                self._send(session, phone, CLARIFY, f"clarify:{active[0].survey.id}", now)
                return True
            return False
        assert parsed.rating is not None
        pool = active or late
        if parsed.short:
            named = [t for t in targets if short_number(t.number) == parsed.short]
            if named:
                pool = [t for t in named if t in active] or named
        if not pool:
            return False
        target = pool[0]
        extra = ""
        if not parsed.short and len(active) > 1 and target in active:
            other = next(short_number(t.number) for t in active if t is not target)
            extra = MULTI_HINT.format(short=short_number(target.number), other=other)
        if target not in active:
            ack = await self._late(session, target, parsed.rating, text, now)
        else:
            ack = await self._rate(session, target, parsed.rating, text, now)
        self._send(session, phone, ack + extra, f"ack:{target.survey.id}:{len(target.survey.history)}", now)
        return True

    @staticmethod
    async def _bot_asked_last(session: AsyncSession, phone: str, targets: list[_Target]) -> bool:
        """True when the bot offered choices by SMS after the latest survey SMS to this phone."""
        asked = await session.scalar(
            select(func.max(Message.created_at))
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.channel == "sms", Conversation.sender_id == phone, Message.direction == "out",
                   Message.payload.is_not(None))
        )
        if asked is None:
            return False
        latest = max(lifecycle.aware(t.survey.sent_at or t.survey.send_at) for t in targets)
        return lifecycle.aware(asked) > latest

    def _answerable(self, survey: Survey, now: dt.datetime) -> bool:
        in_window = survey.due_at is None or lifecycle.aware(survey.due_at) > now
        if survey.status in ACTIVE:
            return in_window
        return survey.status == "answered" and in_window

    async def _targets(self, session: AsyncSession, phone: str, now: dt.datetime) -> list[_Target]:
        since = now - dt.timedelta(days=LATE_DAYS)
        rows = (
            await session.execute(
                select(Survey, WorkOrder.number)
                .join(WorkOrder, WorkOrder.id == Survey.work_order_id)
                .where(
                    Survey.phone == phone,
                    or_(
                        Survey.status.in_(ACTIVE),
                        Survey.status.in_(("answered", "defaulted")) & (Survey.due_at > since),
                    ),
                )
                .order_by(func.coalesce(Survey.sent_at, Survey.send_at).desc(), Survey.id.desc())
            )
        ).all()
        latest: dict[int, _Target] = {}  # only an order's latest round can be answered or corrected
        for survey, number in rows:
            current = latest.get(survey.work_order_id)
            if current is None or survey.round > current.survey.round:
                latest[survey.work_order_id] = _Target(survey, number or "")
        return [t for t in (_Target(s, n or "") for s, n in rows) if latest[t.survey.work_order_id].survey is t.survey]

    async def _rate(self, session: AsyncSession, target: _Target, rating: str, text: str, now: dt.datetime) -> str:
        survey = target.survey
        order = await session.get(WorkOrder, survey.work_order_id)
        assert order is not None
        profile = self.profile_for(order.profile)
        short, label = short_number(target.number), LABELS[rating]
        if survey.status == "answered":  # a correction (濠江 四(五))
            self._note(survey, now, text, rating)
            if not profile.survey.allow_correction:
                return NO_CORRECTION.format(short=short, label=LABELS[survey.rating or rating])
            old = survey.rating or ""
            result = await session.execute(
                update(Survey)
                .where(Survey.id == survey.id, Survey.status == "answered", Survey.rating == old)
                .values(rating=rating, rated_at=now, corrections=Survey.corrections + 1, history=survey.history)
            )
            if result.rowcount != 1 or old == rating:
                return CORRECTED.format(short=short, label=label)
            if (old in BAD) != (rating in BAD):
                if rating in BAD:
                    await self._consequence(session, survey, order, rating, now, profile)
                else:
                    await self._withdraw(session, survey, order, rating, now)
            return CORRECTED.format(short=short, label=label)
        self._note(survey, now, text, rating)
        result = await session.execute(
            update(Survey)
            .where(Survey.id == survey.id, Survey.status.in_(ACTIVE))
            .values(status="answered", rating=rating, rated_at=now, history=survey.history)
        )
        if result.rowcount != 1:
            return CORRECTED.format(short=short, label=label)
        outcome = await self._consequence(session, survey, order, rating, now, profile)
        if outcome == "closed":
            hint = ACK_CORRECT_HINT.format(hours=f"{profile.survey.window_hours:g}") if (
                profile.survey.allow_correction) else ""
            return ACK_GOOD.format(short=short, label=label) + hint
        template = {"redo": ACK_REDO, "expert_review": ACK_EXPERT, "revisit": ACK_REVISIT}.get(outcome, ACK_CLOSE)
        return template.format(short=short, label=label)

    async def _late(self, session: AsyncSession, target: _Target, rating: str, text: str, now: dt.datetime) -> str:
        """A reply after the window: the recorded rating stands; a late complaint still reaches a person."""
        survey = target.survey
        if survey.status == "open":  # window over but the tick has not run yet: default it now
            order = await session.get(WorkOrder, survey.work_order_id)
            assert order is not None
            profile = self.profile_for(order.profile)
            rating_default = profile.survey.default_rating
            result = await session.execute(
                update(Survey)
                .where(Survey.id == survey.id, Survey.status == "open")
                .values(status="defaulted", rating=rating_default, defaulted=True, rated_at=now)
            )
            if result.rowcount == 1:
                survey.status, survey.rating, survey.defaulted = "defaulted", rating_default, True
                await self._consequence(session, survey, order, rating_default, now, profile)
        self._note(survey, now, text, f"late:{rating}")
        await session.execute(update(Survey).where(Survey.id == survey.id).values(history=survey.history))
        if rating in BAD:
            await self.flag_revisit(session, f"late:{survey.id}", "late_unsatisfied", survey.work_order_id,
                                    survey.phone, f"回访期满后回复{LABELS[rating]}")
        return LATE.format(short=short_number(target.number), label=LABELS.get(survey.rating or "", "默认评价"))

    async def _consequence(
        self, session: AsyncSession, survey: Survey, order: WorkOrder, rating: str, now: dt.datetime, profile: Profile
    ) -> str:
        """What a rating does to the order: close it, or (unsatisfied) redo, expert review or revisit."""
        label = LABELS[rating]
        if rating not in BAD:
            await self._move(session, order, "closed", now, f"市民评价{label}")
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
                moved = await self._move(session, order, "reopened", now,
                                         f"市民评价{label}，退回承办单位重新办理（{rules.article}）", profile)
                outcome = "redo" if moved else "revisit"  # e.g. the unit already closed it by hand
            elif outcome == "expert_review":
                await self._move(session, order, "expert_review", now, f"重办后市民仍评价{label}，启动专业评价")
            elif outcome == "close":
                await self._move(session, order, "closed", now, f"市民评价{label}，按规定办结")
            await self.flag_revisit(session, f"rating:{survey.id}:{survey.corrections}", "unsatisfied", order.id,
                                survey.phone, f"市民评价{label}（第{survey.round}轮回访）")
            if self.webhook_url:  # an external ticket system learns of it; the built-in one has the event
                enqueue(session, channel=TICKET_WEBHOOK, recipient=self.webhook_url, dedupe_key=(
                    f"ticket-webhook:{survey.id}:{survey.corrections}"), not_before=now, body={
                        "number": order.number, "event": {"redo": "reopened"}.get(outcome, outcome),
                        "rating": rating, "round": survey.round, "due_at": order.due_at.isoformat(),
                        "at": now.isoformat()})
        await session.execute(update(Survey).where(Survey.id == survey.id).values(outcome=outcome))
        survey.outcome = outcome
        return outcome

    @staticmethod
    async def _move(session: AsyncSession, order: WorkOrder, event: str, now: dt.datetime, note: str,
                    profile: Profile | None = None) -> bool:
        """Apply a survey's consequence when the order's status allows it; a rating must never fail
        because a handling unit moved the order meanwhile (the revisit still reaches a person)."""
        if order.status not in lifecycle.ALLOWED[event]:
            log.info("work order %s: %s skipped, status is %s", order.id, event, order.status)
            return False
        await lifecycle.apply(session, order, event, now=now, note=note, profile=profile)
        return True

    async def _withdraw(self, session: AsyncSession, survey: Survey, order: WorkOrder, rating: str,
                        now: dt.datetime) -> None:
        """A bad rating corrected to a good one within the window: the redo or review is withdrawn."""
        if order.status in ("reopened", "expert_review"):
            await session.execute(update(WorkOrder).where(WorkOrder.id == order.id).values(status="closed"))
            session.add(WorkOrderEvent(work_order_id=order.id, status="closed", at=now,
                                       note=f"市民将评价更正为{LABELS[rating]}，撤回重办"))
        await session.execute(update(Survey).where(Survey.id == survey.id).values(outcome="closed"))

    async def _opt_out(self, session: AsyncSession, phone: str, text: str, now: dt.datetime) -> None:
        exists = await session.scalar(select(SmsOptOut.id).where(SmsOptOut.phone == phone))
        if exists is None:
            session.add(SmsOptOut(phone=phone, text=text[:64], created_at=now))
        pending = (
            await session.scalars(select(Survey).where(Survey.phone == phone, Survey.status == "scheduled"))
        ).all()
        for survey in pending:
            await session.execute(
                update(Survey).where(Survey.id == survey.id, Survey.status == "scheduled").values(status="opted_out")
            )
            await self.flag_revisit(session, f"optout:{survey.id}", "no_sms_survey", survey.work_order_id, phone,
                                "市民已退订回访短信，请人工回访")
        if exists is None:
            self._send(session, phone, OPTOUT_ACK, f"optout:{phone}", now)

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _note(survey: Survey, now: dt.datetime, text: str, meaning: str) -> None:
        survey.history = [*survey.history, {"at": now.isoformat(), "text": text[:200], "meaning": meaning}]

    @staticmethod
    def _send(session: AsyncSession, phone: str, text: str, key: str, now: dt.datetime) -> None:
        enqueue(session, channel="sms", recipient=phone, body={"text": text, "kind": "reply"},
                dedupe_key=f"sms:{key}"[:128], not_before=now)

    @staticmethod
    async def flag_revisit(session: AsyncSession, key: str, reason: str, work_order_id: int | None,
                       phone: str | None, note: str) -> None:
        """Flag a task for a person, once per key (a savepoint keeps the caller's transaction intact)."""
        exists = await session.scalar(select(Revisit.id).where(Revisit.dedupe_key == key))
        if exists is None:
            session.add(Revisit(dedupe_key=key, reason=reason, work_order_id=work_order_id, phone=phone,
                                note=note, status="open"))


def with_survey(profile: Profile, **changes: Any) -> Profile:
    """A profile with some survey rules changed (tests, benchmarks, and operators trying a rule)."""
    return replace(profile, survey=replace(profile.survey, **changes))
