"""When a survey SMS may go and what it carries: scheduled when the order is replied to, held through
the profile's quiet hours (China time); its wording is the SMS channel's survey template."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from common import sms
from common.china_time import CHINA_TZ
from handoff.models import Survey, WorkOrder
from handoff.ratings import LABELS
from handoff.revisits import flag_revisit
from profiles import Profile, SurveyRules


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


def survey_sms(number: str, answer: str, rules: SurveyRules) -> dict[str, Any]:
    """The survey SMS as the SMS channel's survey template takes it (common/sms.py): the order's tail,
    the answer (the channel cuts it to fit and sends the whole of a long one first), the window and
    the default. The scale picks the template: three levels, or the 好差评 five."""
    kind = sms.SURVEY5 if rules.scale == 5 else sms.SURVEY
    return sms.body(kind, no=short_number(number), text=re.sub(r"\s+", "", answer) or "已办理",
                    hours=f"{rules.window_hours:g}", default=LABELS[rules.default_rating])


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
