"""A gateway wired to a local SMS provider server, built with one controllable clock that its router,
survey timers, SMS sender and outbox all read (no sleeping through 24 hours)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from channels.sms.models import SmsRecord
from common.china_time import CHINA_TZ as TZ
from gateway.app import OUTBOX
from gateway.botproc import free_port
from gateway.events_api import SURVEYS
from handoff.models import Revisit, Survey, WorkOrder
from handoff.survey import SurveyService
from handoff.workorders import create_from_intake
from profiles import Profile
from storage.conversations import Message
from tests.conftest import Clock, gateway_client, settings_for
from tests.sms_provider_servers import ALIBABA_IDS, CALLBACK_TOKEN, KEY_ID, KEY_SECRET, TENCENT_IDS, ProviderServer

AUTH = {"Authorization": "Bearer test-token"}
MATTERS = [
    ("小区门口的路灯坏了，晚上一片漆黑", "天坛路御龙湾小区北门"),
    ("菜市场门口下水道堵塞，污水漫到路上", "济源大道东段菜市场"),
    ("公交站台的顶棚被风刮坏了，下雨没处躲", "宣化街公交站"),
    ("学校门口有人占道摆摊，孩子上学很危险", "沁园街道实验小学门口"),
    ("楼下饭店油烟直排，家里窗户都不敢开", "黄河路18号"),
    ("公园里的健身器材螺丝松了，老人差点摔倒", "文化广场公园"),
    ("工地半夜还在施工，噪音吵得睡不着", "北海街道建设工地"),
]


# Fixed days (China time, as chinese-calendar has 2026), so a survey test means the same on every day
# it runs: an ordinary Tuesday; the Monday before 国庆 (10-01 … 10-07 off, Saturday 10-10 worked); a
# Thursday before 春节 (02-15 … 02-23 off) with the make-up Saturday 02-14 (调休上班) between.
TUESDAY = dt.date(2026, 12, 1)
BEFORE_NATIONAL_DAY = dt.date(2026, 9, 28)
BEFORE_SPRING_FESTIVAL = dt.date(2026, 2, 12)
MAKE_UP_SATURDAY = dt.date(2026, 10, 10)


def morning(day: dt.date = TUESDAY, hour: int = 10) -> dt.datetime:
    """A fixed local hour on a fixed day: the app's one clock starts there."""
    return dt.datetime.combine(day, dt.time(hour), TZ).astimezone(dt.UTC)


@dataclass
class SmsGateway:
    client: TestClient
    provider: ProviderServer
    clock: Clock

    @property
    def app(self) -> web.Application:
        return self.client.server.app

    @property
    def surveys(self) -> SurveyService:
        return self.app[SURVEYS]

    def use_profile(self, profile: Profile) -> None:
        self.surveys.profile = profile

    async def deliver(self) -> int:
        """What the worker does when woken: passes until one sends nothing (a conversation's second
        reply is due only once its first has been sent)."""
        sent = 0
        while passed := await self.app[OUTBOX].deliver_due():
            sent += passed
        return sent

    async def settle(self, timeout_s: float = 20.0) -> None:
        """Wait until every SMS accepted for the bot has been answered (background tasks), then deliver."""
        for _ in range(int(timeout_s / 0.05)):
            async with self.surveys.sessions() as session:
                waiting = await session.scalar(
                    select(Message.id).where(Message.direction == "in", Message.status == "received").limit(1))
            if waiting is None:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("messages for the bot were not processed in time")
        await self.deliver()

    async def tick(self) -> dict[str, int]:
        counts = await self.surveys.tick()
        await self.deliver()
        return counts

    async def order(self, phone: str = "13800001234", category: str = "complaint") -> WorkOrder:
        """A work order straight from an intake payload (the bot's part is covered by the e2e tests).
        Each call is a different matter, so it is never attached to an earlier order as a repeat."""
        self._orders = getattr(self, "_orders", 0) + 1
        content, place = MATTERS[(self._orders - 1) % len(MATTERS)]
        receipt = await create_from_intake(
            self.surveys.sessions,
            {"intake_id": uuid.uuid4().hex, "category": category, "content": content, "event_time": "昨晚",
             "place": place, "phone": phone, "anonymous": True},
            self.surveys.profile, channel="web", conversation_id=None, now=self.clock(),
        )
        async with self.surveys.sessions() as session:
            order = await session.scalar(select(WorkOrder).where(WorkOrder.number == receipt.number))
            assert order is not None
            return order

    async def event(self, number: str, event: str, status: int = 200, **fields: Any) -> dict[str, Any]:
        resp = await self.client.post(f"/api/tickets/{number}/events", json={"event": event, **fields}, headers=AUTH)
        body = await resp.json()
        assert resp.status == status, body
        return body

    async def replied(self, number: str, answer: str = "路灯已修复，电工到现场更换了灯泡") -> None:
        for event in ("dispatched", "signed"):
            await self.event(number, event)
        await self.event(number, "replied", answer=answer)

    async def survey(self, number: str, round_: int = 1) -> Survey:
        async with self.surveys.sessions() as session:
            survey = await session.scalar(
                select(Survey).join(WorkOrder).where(WorkOrder.number == number, Survey.round == round_)
            )
            assert survey is not None
            return survey

    async def work_order(self, number: str) -> WorkOrder:
        async with self.surveys.sessions() as session:
            order = await session.scalar(select(WorkOrder).where(WorkOrder.number == number))
            assert order is not None
            return order

    async def revisits(self) -> list[Revisit]:
        async with self.surveys.sessions() as session:
            return list((await session.scalars(select(Revisit).order_by(Revisit.id))).all())

    async def records(self) -> list[SmsRecord]:
        async with self.surveys.sessions() as session:
            return list((await session.scalars(select(SmsRecord).order_by(SmsRecord.id))).all())


@contextlib.asynccontextmanager
async def sms_gateway(
    tmp_path: Path, provider: ProviderServer, *, kind: str = "alibaba", rasa_url: str | None = None,
    clock: Clock | None = None, wake: bool = False, **overrides: Any,
) -> AsyncIterator[SmsGateway]:
    ids = TENCENT_IDS if kind == "tencent" else ALIBABA_IDS  # every kind approved at the stand-in
    values: dict[str, Any] = {
        "sms_provider": kind, "sms_api_url": provider.url, "sms_key_id": KEY_ID, "sms_key_secret": KEY_SECRET,
        "sms_app_id": "1400006666", "sms_sign_name": "济源12345",
        **{f"sms_template_{kind_}": template_id for kind_, template_id in ids.items()},
        "survey_interval_s": 3600.0, "outbox_interval_s": 3600.0,
        "ticket_callback_secret": "callback-secret", "sms_callback_token": CALLBACK_TOKEN, **overrides,
    }
    settings = settings_for(tmp_path, rasa_url or f"http://127.0.0.1:{free_port()}", **values)
    clock = clock or Clock(morning())
    # wake=False: the test ticks and delivers explicitly, no background pass racing its assertions
    async with gateway_client(settings, clock, background=wake) as client:
        yield SmsGateway(client, provider, clock)
