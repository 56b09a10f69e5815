"""Time limits by the official holiday calendar, counted as the regulation says (济源 第十三条(二))."""

import datetime as dt

import pytest

from common.china_time import CHINA_TZ
from handoff.deadlines import due_date, is_workday


def at(y: int, m: int, d: int, h: int = 10) -> dt.datetime:
    return dt.datetime(y, m, d, h, tzinfo=CHINA_TZ)


@pytest.mark.parametrize(
    ("start", "days", "count_start", "expected"),
    [
        # National Day 2026: Oct 1-7 off, Saturday Oct 10 is a make-up working day.
        (at(2026, 9, 30), 7, True, dt.date(2026, 10, 14)),  # Sep 30, Oct 8, 9, 10(Sat), 12, 13, 14
        (at(2026, 9, 30), 3, False, dt.date(2026, 10, 10)),  # next working day first: Oct 8, 9, 10
        # Spring Festival 2026: Feb 15-23 off, Saturday Feb 14 is a make-up working day.
        (at(2026, 2, 13), 3, True, dt.date(2026, 2, 24)),  # Feb 13, 14(Sat), 24
        # Received on a Saturday that is not a working day: counting starts on Monday.
        (at(2026, 11, 21), 3, True, dt.date(2026, 11, 25)),
        # An ordinary week.
        (at(2026, 11, 23), 5, True, dt.date(2026, 11, 27)),
    ],
)
def test_due_date_follows_the_holiday_calendar(start, days, count_start, expected) -> None:
    due = due_date(start, days, count_start_day=count_start)
    assert due.date() == expected
    assert (due.hour, due.minute) == (23, 59)


def test_late_evening_utc_counts_in_china_time() -> None:
    # 2026-11-22 17:00 UTC is Monday 01:00 in China: a working day that counts.
    start = dt.datetime(2026, 11, 22, 17, 0, tzinfo=dt.UTC)
    assert due_date(start, 1, count_start_day=True).date() == dt.date(2026, 11, 23)


def test_year_without_calendar_data_falls_back_to_weekdays() -> None:
    assert is_workday(dt.date(2031, 3, 3)) is True  # a Monday
    assert is_workday(dt.date(2031, 3, 1)) is False  # a Saturday


async def test_work_order_creation_is_idempotent_on_intake_id(tmp_path) -> None:
    from gateway.schema import migrate
    from handoff.workorders import create_from_intake
    from profiles import load
    from storage.db import make_engine, make_sessions

    url = f"sqlite+aiosqlite:///{tmp_path / 'wo.db'}"
    await migrate(url)
    engine = make_engine(url)
    sessions = make_sessions(engine)
    intake = {"intake_id": "abc", "category": "help", "urgent": True, "content": "停水", "phone": "13800001234"}
    now = at(2026, 9, 30)
    first = await create_from_intake(sessions, intake, load("jiyuan"), channel="web", conversation_id=None, now=now)
    again = await create_from_intake(sessions, intake, load("jiyuan"), channel="web", conversation_id=None, now=now)
    await engine.dispose()
    assert first.created and not again.created and first.number == again.number
    assert first.number.startswith("JY20260930")
    assert first.due_at.date() == dt.date(2026, 10, 12)  # help: 5 working days, signing day counts
    assert "紧急" in first.citizen_text() and "5个工作日" in first.citizen_text()
