"""The satisfaction survey (回访 / 好差评) after a work order is replied to: its timers and its state.

Timers are rows: `surveys.send_at` (when the SMS may go: outside quiet hours, China time) and
`surveys.due_at` (end of the reply window, counted from when the provider accepted the SMS).
`SurveyService.tick` sends what is due and applies the profile's default rating to what expired,
each by a conditional UPDATE on the status, so with several replicas and across restarts a survey
is sent once and defaulted once.

The rest of the survey lives beside it: survey_schedule (when and what to send), survey_parse
(reading a reply), survey_replies (what a reply does), ratings (what a rating does to the order),
revisits (tasks for a person), events (handling units' events, `replied` schedules a survey) and
survey_sms (the SMS channel's policy). Rules per profile (profiles/*.yml `survey:`): 济源 第十四条
(no answer → 基本满意; redo + 2 working days), 桂林 第十四条(二) (SMS, 24 h → 满意), 濠江 四(四)(五)
(within 1 working day; a mistaken rating may be corrected), 枝江 第二十条 (unsatisfied again after a
redo → expert review).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handoff import lifecycle
from handoff.deadlines import due_date
from handoff.models import Revisit, SmsOptOut, Survey, WorkOrder
from handoff.ratings import BAD, close_defaulted, consequence
from handoff.revisits import flag_revisit
from handoff.survey_replies import ACTIVE, ForTheBot, SurveyReplies, default_note, flag_unconfirmed
from handoff.survey_schedule import next_allowed, survey_sms
from profiles import Profile
from profiles import load as load_profile
from storage.base import utcnow
from storage.outbox import enqueue

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


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
        webhook_url: str = "",
    ) -> None:
        self.webhook_url = webhook_url
        self.sessions = sessions
        self.profile = profile
        self.clock = clock
        self.on_enqueued = on_enqueued
        self.batch = batch
        self.replies = SurveyReplies(self.profile_for, webhook_url)

    def profile_for(self, profile_id: str) -> Profile:
        return self.profile if profile_id == self.profile.id else load_profile(profile_id)

    def wake(self) -> None:
        if self.on_enqueued is not None:
            self.on_enqueued()

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
                    await flag_revisit(session, key, "survey_overdue", survey.work_order_id, survey.phone,
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
                    await flag_revisit(session, f"optout:{survey.id}", "no_sms_survey", survey.work_order_id,
                                       survey.phone, "市民已退订回访短信，请人工回访")
                    continue
                enqueue(
                    session,
                    channel="sms",
                    recipient=survey.phone,
                    body={**survey_sms(number, survey.answer, rules), "survey_id": survey.id},
                    dedupe_key=f"survey:{survey.id}",
                    not_before=now,
                )
                queued += 1
            await session.commit()
        if queued:
            self.wake()
        return queued

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
            await flag_revisit(session, f"survey-failed:{survey_id}", "survey_sms_failed", survey.work_order_id,
                               survey.phone, f"回访短信未送达：{why}"[:500])

    async def handle_reply(self, session: AsyncSession, phone: str, text: str) -> bool | ForTheBot:
        """An SMS that answers a survey (or opts out) is taken here, in the caller's transaction;
        False: it is a message for the bot; ForTheBot: a held reply is (handoff/survey_replies.py)."""
        return await self.replies.handle(session, phone, text, self.clock())

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
                    rows = (
                        await session.execute(
                            update(Survey)
                            .where(Survey.id.in_(ids), Survey.status == "open", Survey.due_at <= now)
                            .values(status="defaulted", rating=rating, defaulted=True, rated_at=now)
                            .returning(Survey.id, Survey.work_order_id, Survey.history, Survey.phone)
                        )
                    ).all()
                    total += len(rows)
                    owned = [(survey_id, order_id) for survey_id, order_id, _, _ in rows]
                    notes = [(row, default_note(row.history or [], now)) for row in rows]
                    if notes:  # each default says why, in one executemany (ORM bulk UPDATE by primary key)
                        await session.execute(update(Survey), [{"id": row.id, "history": [*(row.history or []), note]}
                                                               for row, note in notes])
                    for row, note in notes:
                        if note["reason"] == "unconfirmed_reply":
                            await flag_unconfirmed(session, row.id, row.work_order_id, row.phone)
                    if rating in BAD:  # unusual, but a profile may say so: the full unsatisfied path
                        for survey_id, _ in owned:
                            survey = await session.get(Survey, survey_id)
                            order = await session.get(WorkOrder, survey.work_order_id) if survey else None
                            if survey is not None and order is not None:
                                await consequence(session, survey, order, rating, now, profile,
                                                  webhook_url=self.webhook_url)
                        continue
                    await close_defaulted(session, owned, rating, now)
                await session.commit()


def with_survey(profile: Profile, **changes: Any) -> Profile:
    """A profile with some survey rules changed (tests, benchmarks, and operators trying a rule)."""
    return replace(profile, survey=replace(profile.survey, **changes))
