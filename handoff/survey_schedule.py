"""When a survey SMS may go and what it says: scheduled when the order is replied to, held through
the profile's quiet hours (China time), and cut to one SMS with the signature."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from common.china_time import CHINA_TZ
from handoff.models import Survey, WorkOrder
from handoff.ratings import LABELS
from handoff.revisits import flag_revisit
from profiles import Profile, SurveyRules

# One 70-character SMS with the signature where the answer's summary allows. No "回复TD退订": that line
# belongs to promotional SMS (Alibaba's template rules); 退订/TD is still honoured when a citizen sends it.
SURVEY_TEXT = "您的工单尾号{short}已办理：{summary}。回复1满意2基本满意3不满意，{hours}小时未回复视为{default}"
MIN_SUMMARY = 6


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


def survey_text(number: str, answer: str, rules: SurveyRules, *, sign_name: str, segment_chars: int) -> str:
    """Names the order, summarises the answer, gives the scale and the default; the summary is
    cut so that the whole fits one SMS with the 【signature】 (never below MIN_SUMMARY characters)."""
    fields = {"short": short_number(number), "hours": f"{rules.window_hours:g}",
              "default": LABELS[rules.default_rating]}
    fixed = len(SURVEY_TEXT.format(summary="", **fields))
    room = segment_chars - len(sign_name) - 2 - fixed
    return SURVEY_TEXT.format(summary=summarise(answer, max(MIN_SUMMARY, room)), **fields)


async def schedule(session: AsyncSession, order: WorkOrder, answer: str, profile: Profile, now: dt.datetime) -> None:
    """The order was replied to: its next survey round, due outside quiet hours (or a person phones)."""
    rounds = await session.scalar(select(func.count(Survey.id)).where(Survey.work_order_id == order.id)) or 0
    if not order.contact_phone:
        await flag_revisit(session, f"nosms:{order.id}:{rounds + 1}", "no_sms_survey", order.id, None,
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
