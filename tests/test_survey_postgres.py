"""The default rule on PostgreSQL with three replicas at once: every expired survey defaulted once,
every order closed once (SQLite serialises writers; PostgreSQL really runs them side by side)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from bench.postgres import available as postgres_available
from bench.survey_default import postgres, seed
from gateway.schema import migrate
from handoff.models import Survey, WorkOrderEvent
from handoff.survey import SurveyService
from profiles import load
from storage.base import utcnow
from storage.db import make_engine, make_sessions

pytestmark = pytest.mark.skipif(not postgres_available(), reason="needs Debian's postgresql binaries and root")


async def test_three_replicas_default_each_survey_once_on_postgres() -> None:
    with postgres() as url:
        await migrate(url)
        now = utcnow()
        await seed(url, 300, now)
        engines = [make_engine(url) for _ in range(3)]
        services = [SurveyService(make_sessions(e), load("jiyuan"), batch=50) for e in engines]
        counts = await asyncio.gather(*(s.apply_defaults(now) for s in services))
        assert sum(counts) == 300
        async with services[0].sessions() as session:
            defaulted = await session.scalar(select(func.count(Survey.id)).where(Survey.status == "defaulted"))
            closed = await session.scalar(
                select(func.count(func.distinct(WorkOrderEvent.work_order_id)))
                .where(WorkOrderEvent.status == "closed"))
            events = await session.scalar(
                select(func.count(WorkOrderEvent.id)).where(WorkOrderEvent.status == "closed"))
            histories = (await session.scalars(select(Survey.history))).all()
        assert (defaulted, closed, events) == (300, 300, 300)
        assert all([h["reason"] for h in history] == ["no_reply"] for history in histories)  # one note, once
        for engine in engines:
            await engine.dispose()
