"""Handling units' events move a work order along (handoff/lifecycle.py), from the built-in backend's
API or an external ticket system's signed callback; `replied` schedules the survey in the same
transaction. Events are taken once per event key: callbacks are delivered at least once."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from handoff import lifecycle
from handoff.models import WorkOrder
from handoff.survey import SurveyService
from handoff.survey_schedule import schedule
from handoff.workorders import get_by_number
from storage.inbox import InboxKey


class WorkOrderEvents:
    """Uses the survey service's sessions, clock and profiles, so a replied order's survey is timed
    by the same clock as the rest of the survey."""

    def __init__(self, surveys: SurveyService) -> None:
        self.surveys = surveys

    async def record(
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
        now = self.surveys.clock()
        async with self.surveys.sessions() as session:
            order = await session.scalar(select(WorkOrder).where(WorkOrder.number == number))
            if order is None:
                return None, False
            if event_key:
                session.add(InboxKey(source=f"ticket:{source}", key=event_key[:160], payload={"event": event}))
                try:
                    await session.flush()
                except IntegrityError:
                    await session.rollback()
                    return await get_by_number(self.surveys.sessions, number), False
            profile = self.surveys.profile_for(order.profile)
            await lifecycle.apply(
                session, order, event, now=now, note=answer.strip() if event == "replied" else note,
                days=days, profile=profile,
            )
            if event == "replied":
                await schedule(session, order, answer.strip(), profile, now)
            await session.commit()
        return await get_by_number(self.surveys.sessions, number), True
