"""China Standard Time, written once. A fixed UTC+8 rather than the tz database's Asia/Shanghai:
China has had no daylight saving since 1991, so both give the same wall clock for every date this
service handles, and the fixed offset needs no tzdata on the host (or in Rasa's venv)."""

from __future__ import annotations

import datetime as dt

CHINA_TZ = dt.timezone(dt.timedelta(hours=8))
