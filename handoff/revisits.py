"""Tasks for a person: phone the citizen when the survey cannot do its job (an SMS that failed, an
unsatisfied rating, no phone to send to, an opt-out)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.models import Revisit


async def flag_revisit(session: AsyncSession, key: str, reason: str, work_order_id: int | None,
                       phone: str | None, note: str) -> None:
    """Flag a task for a person, once per key (a savepoint keeps the caller's transaction intact)."""
    exists = await session.scalar(select(Revisit.id).where(Revisit.dedupe_key == key))
    if exists is None:
        session.add(Revisit(dedupe_key=key, reason=reason, work_order_id=work_order_id, phone=phone,
                            note=note, status="open"))
