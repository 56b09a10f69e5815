"""What a survey reply does: matched to the citizen's survey (the latest round of each order, the
order number when one is given), recorded as a rating, a correction, a late answer or an opt-out,
acknowledged by SMS, and passed to the rating's consequence. Rules per profile: 济源 第十四条,
桂林 第十四条(二), 濠江 四(四)(五) (a mistaken rating may be corrected), 枝江 第二十条.

A reply meant for a survey reaches it whatever else the citizen is doing on SMS: an explicit
尾号/工单号, or a rating the bot's open question could not take, is the survey's. A reply both could
take ("3" while the bot offers 1确认提交、2修改、3取消) is held and the citizen is asked which one it
was; "不是" hands it to the bot as written. Losing a rating to the bot silently corrupts the
satisfaction rate, which is what a hotline is judged by."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from common import buttons
from common.text import normalize
from handoff import lifecycle
from handoff.models import SmsOptOut, Survey, WorkOrder
from handoff.ratings import BAD, LABELS, consequence, withdraw_consequence
from handoff.revisits import flag_revisit
from handoff.survey_parse import SCALES, parse_reply
from handoff.survey_schedule import short_number
from profiles import Profile
from storage.conversations import Conversation, Message
from storage.outbox import OutboxItem, enqueue

ACTIVE = ("queued", "open")  # the citizen can answer
LATE_DAYS = 7  # a reply this long after the window is still matched to the survey (and answered)
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
CLARIFY = "抱歉，没看懂您的评价。请回复数字：{choices}。"
OPTOUT_ACK = "您已退订满意度回访短信，今后不再发送。如需反映问题，请拨打12345。"
ASK = "您是在评价工单尾号{short}吗？请回复“是”或“不是”。"
YES = {"是", "是的", "对", "对的", "嗯", "是啊", "对啊", "是评价", "y", "yes"}
NO = {"不是", "不", "否", "不对", "不是的", "没有", "no"}
ASKED = "ask:"  # history meaning of a held reply: "ask:<rating>", the citizen's text beside it
ASK_HOURS = 24  # a 是 later than this answers something else (the bot's 是/否), not our old question


def pending_ask(survey: Survey) -> str | None:
    """The rating a held reply stands for, while the citizen has not said whether it was one (the
    default may have fallen meanwhile: a 是 still makes it the citizen's rating)."""
    last = held_entry(survey)
    meaning = str(last.get("meaning", "")) if isinstance(last, dict) else ""
    return meaning[len(ASKED):] if meaning.startswith(ASKED) else None


def held_entry(survey: Survey) -> dict[str, object] | None:
    """The latest history entry that is not the default's note."""
    return next((h for h in reversed(survey.history) if not (isinstance(h, dict) and h.get("meaning") == "default")),
                None)


@dataclass(frozen=True)
class ForTheBot:
    """A held reply the citizen said was not a rating: the bot gets it as they wrote it."""

    text: str


@dataclass
class _Target:
    survey: Survey
    number: str
    profile: str = ""


def choices(scale: int) -> str:
    """The scale's digits as the citizen replies them: 1满意、2基本满意、3不满意."""
    return "、".join(f"{digit}{LABELS[rating]}" for digit, rating in SCALES[scale].items())


class SurveyReplies:
    """Reads SMS replies against open surveys; one per survey service."""

    def __init__(self, profile_for: Callable[[str], Profile], webhook_url: str = "") -> None:
        self.profile_for = profile_for
        self.webhook_url = webhook_url

    async def handle(self, session: AsyncSession, phone: str, text: str, now: dt.datetime) -> bool | ForTheBot:
        """Treat an SMS as a survey reply or an opt-out if it is one (in the caller's transaction,
        acknowledgements enqueued there too); False means it is for the bot, ForTheBot that an earlier
        held reply is."""
        targets = await self._targets(session, phone, now)
        scale = self.profile_for(targets[0].profile).survey.scale if targets else 3  # the latest survey's
        parsed = parse_reply(text, scale)
        held = next((t for t in targets if _asked_lately(t.survey, now)), None)
        if held is not None:
            answer = _yes_no(text)
            if answer is not None:
                return await self._answer_ask(session, phone, held, text, answer, now)
            self._note(held.survey, now, text, "ask_unanswered")  # the question lapses; read the reply afresh
            await session.execute(update(Survey).where(Survey.id == held.survey.id).values(history=held.survey.history))
        if parsed.kind == "optout":
            await self._opt_out(session, phone, text, now)
            return True
        active = [t for t in targets if self._answerable(t.survey, now)]
        late = [t for t in targets if t not in active]
        if parsed.kind == "unreadable":
            if targets and await self._bot_asked_last(session, phone, targets):
                return False  # the citizen is talking with the bot
            if active and parsed.chars <= 15 and not any(t.survey.clarified for t in active):
                await session.execute(update(Survey).where(Survey.id == active[0].survey.id).values(clarified=True))
                self._note(active[0].survey, now, text, "unreadable")
                self._send(session, phone, CLARIFY.format(choices=choices(scale)), f"clarify:{active[0].survey.id}",
                           now)
                return True
            return False
        assert parsed.rating is not None
        pool = active or late
        named: list[_Target] = []
        if parsed.short:
            named = [t for t in targets if short_number(t.number) == parsed.short]
            if named:
                pool = [t for t in named if t in active] or named
        if not pool:
            return False
        target = pool[0]
        if not named and await self._bot_could_take(session, phone, text):
            return await self._ask(session, phone, target, text, parsed.rating, now)
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

    async def _ask(
        self, session: AsyncSession, phone: str, target: _Target, text: str, rating: str, now: dt.datetime
    ) -> bool:
        """Hold a reply the bot's open question could also take, and ask which it was: don't guess."""
        survey = target.survey
        self._note(survey, now, text, ASKED + rating)
        await session.execute(update(Survey).where(Survey.id == survey.id).values(history=survey.history))
        self._send(session, phone, ASK.format(short=short_number(target.number)),
                   f"ask:{survey.id}:{len(survey.history)}", now)
        return True

    async def _answer_ask(
        self, session: AsyncSession, phone: str, target: _Target, text: str, yes: bool, now: dt.datetime
    ) -> bool | ForTheBot:
        """是: the held reply is the rating, even if the window ended meanwhile (it came in time);
        不是: it goes to the bot as the citizen wrote it."""
        survey = target.survey
        rating = pending_ask(survey) or ""
        held = held_entry(survey) or {}
        held_text = str(held.get("text", ""))
        if not yes:
            self._note(survey, now, text, "not_for_survey")
            await session.execute(update(Survey).where(Survey.id == survey.id).values(history=survey.history))
            return ForTheBot(held_text)
        held_at = dt.datetime.fromisoformat(str(held.get("at")))
        in_time = survey.due_at is None or held_at <= lifecycle.aware(survey.due_at)
        if not in_time:
            ack = await self._late(session, target, rating, held_text, now)
        elif survey.status == "defaulted":
            ack = await self._replace_default(session, target, rating, text, now)
        else:
            ack = await self._rate(session, target, rating, text, now)
        self._send(session, phone, ack, f"ack:{survey.id}:{len(survey.history)}", now)
        return True

    async def _replace_default(
        self, session: AsyncSession, target: _Target, rating: str, text: str, now: dt.datetime
    ) -> str:
        """The default fell while a reply made in time waited for the citizen's 是: the citizen's
        rating replaces it, with its consequence (a default never overwrites a rating)."""
        survey = target.survey
        order = await session.get(WorkOrder, survey.work_order_id)
        assert order is not None
        profile = self.profile_for(order.profile)
        old = survey.rating or ""
        self._note(survey, now, text, rating)
        result = await session.execute(
            update(Survey)
            .where(Survey.id == survey.id, Survey.status == "defaulted")
            .values(status="answered", rating=rating, defaulted=False, rated_at=now,
                    corrections=Survey.corrections + 1, history=survey.history)
        )
        short, label = short_number(target.number), LABELS[rating]
        if result.rowcount != 1:
            return CORRECTED.format(short=short, label=label)
        survey.corrections += 1
        if rating in BAD and old not in BAD:
            outcome = await consequence(session, survey, order, rating, now, profile, webhook_url=self.webhook_url)
            template = {"redo": ACK_REDO, "expert_review": ACK_EXPERT, "revisit": ACK_REVISIT}.get(outcome, ACK_CLOSE)
            return template.format(short=short, label=label)
        if rating not in BAD and old in BAD:
            await withdraw_consequence(session, survey, order, rating, now)
        return ACK_GOOD.format(short=short, label=label)

    @staticmethod
    async def _bot_could_take(session: AsyncSession, phone: str, text: str) -> bool:
        """The bot's latest SMS offered choices and this reply names one of them (its number or title)."""
        last = await session.scalar(
            select(Message.payload)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.channel == "sms", Conversation.sender_id == phone, Message.direction == "out")
            .order_by(Message.id.desc())
            .limit(1)
        )
        offered = (last or {}).get("buttons")
        return bool(offered) and buttons.chosen_payload(text, offered, numbered=True) is not None

    @staticmethod
    async def _bot_asked_last(session: AsyncSession, phone: str, targets: list[_Target]) -> bool:
        """True when the bot's SMS to this phone went out after the latest survey SMS: an unreadable
        reply is then for the bot, not a survey reply to clarify. Outbox ids order the two, whatever
        clocks stamped them."""
        survey_sms = await session.scalar(
            select(func.max(OutboxItem.id)).where(OutboxItem.dedupe_key.in_([f"survey:{t.survey.id}" for t in targets]))
        )
        bot_sms = await session.scalar(
            select(func.max(OutboxItem.id)).where(OutboxItem.channel == "sms", OutboxItem.recipient == phone,
                                                  OutboxItem.conversation_id.is_not(None))
        )
        return bot_sms is not None and (survey_sms is None or bot_sms > survey_sms)

    def _answerable(self, survey: Survey, now: dt.datetime) -> bool:
        in_window = survey.due_at is None or lifecycle.aware(survey.due_at) > now
        if survey.status in ACTIVE:
            return in_window
        return survey.status == "answered" and in_window

    async def _targets(self, session: AsyncSession, phone: str, now: dt.datetime) -> list[_Target]:
        since = now - dt.timedelta(days=LATE_DAYS)
        rows = (
            await session.execute(
                select(Survey, WorkOrder.number, WorkOrder.profile)
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
        for survey, number, profile in rows:
            current = latest.get(survey.work_order_id)
            if current is None or survey.round > current.survey.round:
                latest[survey.work_order_id] = _Target(survey, number or "", profile)
        return [t for t in (_Target(s, n or "", p) for s, n, p in rows) if latest[t.survey.work_order_id].survey is t.survey]

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
                    await consequence(session, survey, order, rating, now, profile, webhook_url=self.webhook_url)
                else:
                    await withdraw_consequence(session, survey, order, rating, now)
            return CORRECTED.format(short=short, label=label)
        self._note(survey, now, text, rating)
        result = await session.execute(
            update(Survey)
            .where(Survey.id == survey.id, Survey.status.in_(ACTIVE))
            .values(status="answered", rating=rating, rated_at=now, history=survey.history)
        )
        if result.rowcount != 1:
            return CORRECTED.format(short=short, label=label)
        outcome = await consequence(session, survey, order, rating, now, profile, webhook_url=self.webhook_url)
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
                await record_default(session, survey, now)
                await consequence(session, survey, order, rating_default, now, profile,
                                      webhook_url=self.webhook_url)
        self._note(survey, now, text, f"late:{rating}")
        await session.execute(update(Survey).where(Survey.id == survey.id).values(history=survey.history))
        if rating in BAD:
            await flag_revisit(session, f"late:{survey.id}", "late_unsatisfied", survey.work_order_id,
                               survey.phone, f"回访期满后回复{LABELS[rating]}")
        return LATE.format(short=short_number(target.number), label=LABELS.get(survey.rating or "", "默认评价"))

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
            await flag_revisit(session, f"optout:{survey.id}", "no_sms_survey", survey.work_order_id, phone,
                               "市民已退订回访短信，请人工回访")
        if exists is None:
            self._send(session, phone, OPTOUT_ACK, f"optout:{phone}", now)

    @staticmethod
    def _note(survey: Survey, now: dt.datetime, text: str, meaning: str) -> None:
        survey.history = [*survey.history, {"at": now.isoformat(), "text": text[:200], "meaning": meaning}]

    @staticmethod
    def _send(session: AsyncSession, phone: str, text: str, key: str, now: dt.datetime) -> None:
        enqueue(session, channel="sms", recipient=phone, body={"text": text, "kind": "reply"},
                dedupe_key=f"sms:{key}"[:128], not_before=now)


def default_note(history: list[Any], now: dt.datetime) -> dict[str, Any]:
    """Why a survey got the default, as its history records it: no reply at all, or a reply held for
    the citizen's 是 that never came (then a person asks them, as the rating may have been theirs)."""
    held = next((h for h in reversed(history) if not (isinstance(h, dict) and h.get("meaning") == "default")), None)
    asked = isinstance(held, dict) and str(held.get("meaning", "")).startswith(ASKED)
    return {"at": now.isoformat(), "text": "", "meaning": "default",
            "reason": "unconfirmed_reply" if asked else "no_reply"}


async def flag_unconfirmed(session: AsyncSession, survey_id: int, order_id: int, phone: str) -> None:
    await flag_revisit(session, f"unconfirmed:{survey_id}", "unconfirmed_reply", order_id, phone,
                       "市民的回复可能是评价，询问后未确认，已按默认评价，请人工核实")


async def record_default(session: AsyncSession, survey: Survey, now: dt.datetime) -> None:
    """One survey defaulted outside the batch (a reply came after its window, before the tick)."""
    note = default_note(survey.history, now)
    survey.history = [*survey.history, note]
    await session.execute(update(Survey).where(Survey.id == survey.id).values(history=survey.history))
    if note["reason"] == "unconfirmed_reply":
        await flag_unconfirmed(session, survey.id, survey.work_order_id, survey.phone)


def _asked_lately(survey: Survey, now: dt.datetime) -> bool:
    """A held reply whose question is recent enough for a 是/不是 to answer it."""
    if pending_ask(survey) is None:
        return False
    held = held_entry(survey) or {}
    return now - dt.datetime.fromisoformat(str(held.get("at"))) <= dt.timedelta(hours=ASK_HOURS)


def _yes_no(text: str) -> bool | None:
    """The citizen's answer to ASK: True (是), False (不是), or None when the reply is something else."""
    word = normalize(text).rstrip("。.!！").lower()
    return True if word in YES else False if word in NO else None
