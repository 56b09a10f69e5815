"""Time limits in working days by China's official holiday calendar (not Monday–Friday).

chinese-calendar ships the State Council's schedule year by year; for a year it does not know yet
we fall back to Monday–Friday and say so once in the log, rather than refusing to take requests.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging

import chinese_calendar

from common.china_time import CHINA_TZ

log = logging.getLogger(__name__)
_warned: set[int] = set()


def is_workday(day: dt.date) -> bool:
    try:
        return chinese_calendar.is_workday(day)
    except NotImplementedError:
        if day.year not in _warned:
            _warned.add(day.year)
            log.warning("holiday calendar has no data for %s; counting Monday to Friday", day.year)
        return day.weekday() < 5


def due_date(start: dt.datetime, working_days: int, *, count_start_day: bool) -> dt.datetime:
    """End (23:59:59 China time) of the last working day of a limit that begins at `start`.

    count_start_day: the day the order is received counts as day one when it is a working day
    (济源 第十三条(二) 办理时限包含签收当日); otherwise counting starts the next working day.
    """
    return dt.datetime.combine(_last_day(start.astimezone(CHINA_TZ).date(), working_days, count_start_day),
                               dt.time(23, 59, 59), CHINA_TZ)


@functools.lru_cache(maxsize=256)
def _last_day(day: dt.date, working_days: int, count_start_day: bool) -> dt.date:
    """Cached: the same few limits are counted from the same day all day long, and chinese-calendar
    validates every date it is asked about, a visible share of a work order's creation time."""
    counted = 0
    if not (count_start_day and is_workday(day)):
        day += dt.timedelta(days=1)
    while True:
        if is_workday(day):
            counted += 1
            if counted == working_days:
                return day
        day += dt.timedelta(days=1)
