"""Survey timers at volume and SMS callbacks against the gateway.

    .venv/bin/python -m bench.survey_default [--surveys 10000] [--callbacks 2000] [--postgres]

1. 10,000 pending surveys, all past their window: time for `SurveyService.apply_defaults` to give every
   one the default rating and close its order (one conditional UPDATE … RETURNING per batch of 500, the
   orders closed and their history written in the same transaction). SQLite; with --postgres also a
   throwaway PostgreSQL cluster (Debian's initdb/pg_ctl, run as the postgres user, on a loopback port).
2. Inbound SMS callbacks/s through the whole gateway (aiohttp server, SQLite, local Alibaba stand-in):
   SmsUp survey replies, SmsReport delivery reports, and SmsUp messages for the bot (bot offline, so
   each is stored, answered with the apology and queued) at 20 concurrent senders.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from sqlalchemy import func, insert, select

from bench.postgres import postgres
from gateway.app import OUTBOX, create_app
from gateway.botproc import free_port
from gateway.config import Settings
from gateway.events_api import SURVEYS
from gateway.schema import migrate
from handoff.models import Survey, WorkOrder, WorkOrderEvent
from handoff.survey import SurveyService
from profiles import load
from storage.base import utcnow
from storage.db import make_engine, make_sessions
from tests.sms_provider_servers import KEY_ID, KEY_SECRET, AlibabaServer


async def seed(url: str, n: int, now: dt.datetime) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        rows = [
            {"number": f"JY{i:014d}", "intake_id": uuid.uuid4().hex, "profile": "jiyuan", "channel": "web",
             "category": "complaint", "urgent": False, "facts": {"content": "bench"}, "contact_phone": f"139{i:08d}",
             "anonymous": True, "transcript": [], "status": "replied", "created_at": now, "dispatch_due_at": now,
             "due_at": now, "limit_working_days": 7, "confidential": False, "repeat_count": 0, "escalated": False,
             "supplements": []}
            for i in range(n)
        ]
        for start in range(0, n, 1000):
            await conn.execute(insert(WorkOrder), rows[start:start + 1000])
        ids = (await conn.execute(select(WorkOrder.id).order_by(WorkOrder.id))).scalars().all()
        surveys = [
            {"work_order_id": oid, "round": 1, "phone": f"139{i:08d}", "status": "open", "answer": "已处理",
             "send_at": now - dt.timedelta(hours=30), "sent_at": now - dt.timedelta(hours=30),
             "due_at": now - dt.timedelta(hours=6), "defaulted": False, "corrections": 0, "clarified": False,
             "history": [], "created_at": now}
            for i, oid in enumerate(ids)
        ]
        for start in range(0, n, 1000):
            await conn.execute(insert(Survey), surveys[start:start + 1000])
    await engine.dispose()


async def defaults(url: str, n: int) -> float:
    await migrate(url)
    now = utcnow()
    await seed(url, n, now)
    engine = make_engine(url)
    sessions = make_sessions(engine)
    service = SurveyService(sessions, load("jiyuan"))
    started = time.perf_counter()
    applied = await service.apply_defaults(now)
    elapsed = time.perf_counter() - started
    async with sessions() as session:
        closed = await session.scalar(select(func.count(WorkOrderEvent.id)).where(WorkOrderEvent.status == "closed"))
    await engine.dispose()
    assert applied == n and closed == n, (applied, closed)
    return elapsed


async def callbacks(n: int, concurrency: int = 20, wal: bool = False) -> dict[str, float]:
    provider = await AlibabaServer().start()
    tmp = Path(tempfile.mkdtemp())
    if wal:  # journal_mode=WAL is stored in the file: every connection the gateway opens then uses it
        with contextlib.closing(sqlite3.connect(tmp / "bench.db")) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'bench.db'}", rasa_url=f"http://127.0.0.1:{free_port()}",
        retry_interval_s=3600, survey_interval_s=3600, sms_provider="alibaba", sms_api_url=provider.url,
        sms_key_id=KEY_ID, sms_key_secret=KEY_SECRET, sms_template_reply="SMS_1", sms_template_survey="SMS_2",
    )
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    app = server.app
    service: SurveyService = app[SURVEYS]
    base = f"http://127.0.0.1:{server.port}"
    now = utcnow()
    await seed(settings.database_url, n, now)
    async with service.sessions() as session:  # reopen the windows: these surveys are being answered
        from sqlalchemy import update

        await session.execute(update(Survey).values(due_at=now + dt.timedelta(hours=20)))
        await session.commit()
    results: dict[str, float] = {}

    async def push(path: str, bodies: list[object]) -> float:
        queue: asyncio.Queue[object] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)

        async def sender(http: aiohttp.ClientSession) -> None:
            while not queue.empty():
                body = queue.get_nowait()
                async with http.post(base + path, json=body) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()

        async with aiohttp.ClientSession() as http:
            started = time.perf_counter()
            await asyncio.gather(*(sender(http) for _ in range(concurrency)))
            return len(bodies) / (time.perf_counter() - started)

    ups = [[{"phone_number": f"139{i:08d}", "content": "1", "send_time": "2026-12-01 10:00:00",
             "dest_code": "1", "sequence_id": i}] for i in range(n)]
    results["SmsUp survey replies"] = await push("/sms/alibaba/up", ups)
    reports = [[{"phone_number": f"139{i:08d}", "success": True, "err_code": "DELIVERED", "biz_id": f"{i}^0",
                 "report_time": "2026-12-01 10:00:05"}] for i in range(n)]
    results["SmsReport delivery reports"] = await push("/sms/alibaba/report", reports)
    intake = [[{"phone_number": f"137{i:08d}", "content": "我家楼下路灯坏了一个星期", "send_time": "2026-12-01 10:00:00",
                "sequence_id": f"in-{i}"}] for i in range(n // 4)]
    results["SmsUp messages for the bot (bot offline)"] = await push("/sms/alibaba/up", intake)
    async with service.sessions() as session:
        answered = await session.scalar(select(func.count(Survey.id)).where(Survey.status == "answered"))
    assert answered == n, answered
    app[OUTBOX].senders.clear()  # stop sending the acknowledgements before shutdown
    await server.close()
    await provider.close()
    return results


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # the offline bot's warnings would drown the figures
    parser = argparse.ArgumentParser()
    parser.add_argument("--surveys", type=int, default=10_000)
    parser.add_argument("--callbacks", type=int, default=2000)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--wal", action="store_true", help="also measure callbacks with SQLite in WAL mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seconds = await defaults(f"sqlite+aiosqlite:///{tmp}/defaults.db", args.surveys)
    print(f"default rule, SQLite:     {args.surveys} expired surveys in {seconds:.2f} s "
          f"({args.surveys / seconds:,.0f}/s), each order closed with its history row")
    if args.postgres:
        with postgres() as url:
            seconds = await defaults(url, args.surveys)
        print(f"default rule, PostgreSQL: {args.surveys} expired surveys in {seconds:.2f} s "
              f"({args.surveys / seconds:,.0f}/s)")
    for name, rate in (await callbacks(args.callbacks)).items():
        print(f"callbacks/s, {name}: {rate:,.0f}")
    if args.wal:
        for name, rate in (await callbacks(args.callbacks, wal=True)).items():
            print(f"callbacks/s, SQLite WAL, {name}: {rate:,.0f}")
    print(f"(CPU: {os.cpu_count()} cores; SQLite; 20 concurrent senders; each callback one item)")


if __name__ == "__main__":
    asyncio.run(main())
