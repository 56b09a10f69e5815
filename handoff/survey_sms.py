"""The survey's side of SMS, given to the SMS channel as its policy: an uplink may be a rating or an
opt-out before it is a message for the bot; a survey SMS starts its reply window when accepted; an
SMS that cannot be sent or delivered sends a person to phone the citizen instead."""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from common import sms
from handoff.models import SmsOptOut, Survey
from handoff.revisits import flag_revisit
from handoff.survey import SurveyService
from handoff.survey_replies import ForTheBot
from storage.outbox import OutboxItem


class DeliveryRecord(Protocol):
    """The SMS channel's record of one segment, as far as the survey needs it."""

    id: int
    phone: str


def survey_id(body: dict[str, Any] | None) -> int | None:
    """The survey an SMS outbox item belongs to, if it is a survey SMS."""
    body = body or {}
    survey = body.get("kind") in (sms.SURVEY, sms.SURVEY5)
    return int(body["survey_id"]) if survey and body.get("survey_id") is not None else None


class SurveySmsPolicy:
    """Implements channels.sms.SmsPolicy with the survey service (structurally: handoff does not
    import channels)."""

    def __init__(self, surveys: SurveyService) -> None:
        self.surveys = surveys

    def clock(self) -> dt.datetime:
        return self.surveys.clock()  # one clock for the survey and its SMS, so tests control both

    async def take_reply(self, session: AsyncSession, phone: str, text: str) -> bool | str:
        taken = await self.surveys.handle_reply(session, phone, text)
        return taken.text if isinstance(taken, ForTheBot) else taken

    async def refuse(self, phone: str, item: OutboxItem) -> str | None:
        """退订 after the survey was queued (e.g. during an outage): it is not sent; a person phones."""
        sid = survey_id(item.body)
        if sid is None:
            return None
        async with self.surveys.sessions() as session:
            if await session.scalar(select(SmsOptOut.id).where(SmsOptOut.phone == phone)) is None:
                return None
            survey = await session.get(Survey, sid)
            result = await session.execute(
                update(Survey).where(Survey.id == sid, Survey.status == "queued").values(status="opted_out")
            )
            if result.rowcount == 1 and survey is not None:
                await flag_revisit(session, f"optout:{sid}", "no_sms_survey", survey.work_order_id,
                                   phone, "市民已退订回访短信，请人工回访")
            await session.commit()
        return "the number opted out of survey SMS"

    async def sent(self, item: OutboxItem, now: dt.datetime) -> None:
        sid = survey_id(item.body)
        if sid is None:
            return
        async with self.surveys.sessions() as session:
            await self.surveys.mark_sent(session, sid, now)
            await session.commit()

    async def not_sent(self, session: AsyncSession, item: OutboxItem, error: str) -> None:
        sid = survey_id(item.body)
        if sid is not None:
            await self.surveys.mark_failed(session, sid, error)
        else:
            await flag_revisit(session, f"outbox:{item.id}", "sms_failed", None, item.recipient,
                               f"短信未能发出：{error}"[:500])

    async def undelivered(
        self, session: AsyncSession, record: DeliveryRecord, item: OutboxItem | None, error: str
    ) -> None:
        sid = survey_id(item.body if item is not None else None)
        if sid is not None:
            await self.surveys.mark_failed(session, sid, error or "未送达")
        else:
            await flag_revisit(session, f"sms:{record.id}", "sms_undelivered", None, record.phone,
                               f"短信未送达：{error}"[:500])
