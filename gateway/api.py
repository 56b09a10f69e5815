"""The handling units' API (a work order by number, its media) and the operators' metrics, behind a bearer token."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.http import json_error
from gateway.metrics import METRICS
from handoff.models import WorkOrder
from handoff.workorders import get_by_number
from storage.media import Media

SESSIONS = web.AppKey("api_sessions", async_sessionmaker[AsyncSession])
TOKEN = web.AppKey("api_token", str)


def authorised(request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), request.app[TOKEN].encode())


def unauthorised() -> web.Response:
    """The one 401 every bearer-token route answers (handling units, events, surveys, metrics)."""
    response = json_error(401, "missing or wrong bearer token")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def work_order_json(order: WorkOrder) -> dict[str, Any]:
    """What a handling unit needs: the facts and a way to call back (unless the citizen is anonymous)."""
    return {
        "number": order.number,
        "profile": order.profile,
        "channel": order.channel,
        "category": order.category,
        "urgent": order.urgent,
        "status": order.status,
        "facts": order.facts,
        "contact": {"phone": order.contact_phone, "name": None if order.anonymous else order.contact_name},
        "anonymous": order.anonymous,
        "created_at": order.created_at.isoformat(),
        "dispatch_due_at": order.dispatch_due_at.isoformat(),
        "due_at": order.due_at.isoformat(),
        "limit_working_days": order.limit_working_days,
        "transcript": order.transcript,
        "history": [{"status": e.status, "note": e.note, "at": e.at.isoformat()} for e in order.events],
    }


async def get_ticket(request: web.Request) -> web.Response:
    if not authorised(request):
        return unauthorised()
    order = await get_by_number(request.app[SESSIONS], request.match_info["number"])
    if order is None:
        return json_error(404, "no such work order")
    return web.json_response(work_order_json(order))


async def get_media(request: web.Request) -> web.Response:
    """A picture or voice note a citizen sent, by channel and the media id in the work order's transcript."""
    if not authorised(request):
        return unauthorised()
    async with request.app[SESSIONS]() as session:
        media = await session.scalar(select(Media).where(
            Media.channel == request.match_info["channel"], Media.media_id == request.match_info["media_id"]))
    if media is None:
        return json_error(404, "no such media (not fetched yet, or expired before it was)")
    return web.Response(body=media.data, content_type=media.content_type,
                        headers={"X-Content-SHA256": media.sha256, "Cache-Control": "private, no-store"})


def setup_runtime(app: web.Application, sessions: async_sessionmaker[AsyncSession], token: str) -> None:
    app[SESSIONS] = sessions
    app[TOKEN] = token


async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text format; a scrape job sends the same bearer token as the handling units."""
    if not authorised(request):
        return unauthorised()
    body, content_type = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/api/tickets/{number}", get_ticket)
    app.router.add_get("/api/media/{channel}/{media_id}", get_media)
