"""The external ticket system times out after it created the ticket: the gateway cannot know it
was created, so it sends the same delivery again; the delivery id lets the ticket system create
one ticket, not two (docs/operations.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from handoff.notify import CHANNEL, sign
from storage.outbox import OutboxItem
from tests.sms_gateway import sms_gateway
from tests.sms_provider_servers import AlibabaServer
from tests.test_survey_flow import provider, replied_and_surveyed, say

__all__ = ["provider"]  # the SMS provider stand-in fixture, shared with the survey tests


class TicketSystem:
    """A ticket system that creates a ticket per delivery id, and answers the first delivery only
    after the gateway stopped waiting (its timeout is 10 s)."""

    def __init__(self) -> None:
        self.tickets: dict[str, dict[str, object]] = {}
        self.deliveries: list[str] = []

    async def hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        stamp = request.headers["X-Hotline-Timestamp"]
        assert request.headers["X-Hotline-Signature"] == sign("callback-secret", stamp, raw)
        delivery = request.headers["X-Hotline-Delivery"]
        self.deliveries.append(delivery)
        self.tickets.setdefault(delivery, json.loads(raw))  # created, idempotently
        if len(self.deliveries) == 1:
            await asyncio.sleep(11)  # created, then the answer never arrives in time
        return web.json_response({"ok": True})


async def test_ticket_webhook_timing_out_after_create_makes_one_ticket(tmp_path: Path, provider: AlibabaServer) -> None:
    system = TicketSystem()
    app = web.Application()
    app.router.add_post("/hook", system.hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with sms_gateway(tmp_path, provider, ticket_webhook_url=f"http://127.0.0.1:{server.port}/hook") as gw:
            number = await replied_and_surveyed(gw)
            await say(gw, "3", seq=1)  # unsatisfied: the order is reopened, the ticket system told
            assert len(system.deliveries) == 1  # it timed out after creating the ticket
            gw.clock.advance(minutes=5)
            await gw.deliver()
            assert len(system.deliveries) == 2 and len(set(system.deliveries)) == 1  # the same delivery again
            [ticket] = system.tickets.values()
            assert (ticket["number"], ticket["event"]) == (number, "reopened")
            async with gw.surveys.sessions() as session:
                [item] = (await session.scalars(select(OutboxItem).where(OutboxItem.channel == CHANNEL))).all()
            assert (item.status, item.attempts) == ("sent", 2)
    finally:
        await server.close()
