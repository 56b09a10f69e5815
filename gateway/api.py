"""The handling units' API (a work order by number, its media) and the operators' metrics, behind named
bearer tokens with scopes (gateway/tokens.py). Every full phone or ID number returned is audited."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.text import mask_phone
from gateway.http import json_error
from gateway.logs import redact
from gateway.metrics import METRICS
from gateway.tokens import Caller, resolve
from handoff.agents import audit
from handoff.models import WorkOrder
from handoff.workorders import get_by_number
from storage.media import Media

SESSIONS = web.AppKey("api_sessions", async_sessionmaker[AsyncSession])
TOKEN = web.AppKey("api_token", str)


async def caller(request: web.Request, scope: str) -> Caller | web.Response:
    """The token's caller when it has `scope`; otherwise the response to return (401 or 403)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    found = await resolve(request.app[SESSIONS], token.strip(), request.app[TOKEN]) if scheme.lower() == "bearer" else None
    if found is None:
        return unauthorised()
    if scope not in found.scopes:
        return json_error(403, f"this token lacks the scope {scope}")
    return found


def unauthorised() -> web.Response:
    """The one 401 every bearer-token route answers (handling units, events, surveys, metrics)."""
    response = json_error(401, "missing or wrong bearer token")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _sealed(order: WorkOrder) -> bool:
    """The citizen asked for confidentiality, or reported someone: the handling unit may be the party
    reported, so who wrote is not theirs to see (枝江 第二十五条)."""
    return order.confidential or order.category == "report"


def work_order_json(order: WorkOrder, full_contact: bool) -> tuple[dict[str, Any], list[str]]:
    """What a handling unit needs: the facts, supplements, repeats, why urgent, and a way to call back.
    Full numbers only where `full_contact` allows; returns the view and the full fields it shows."""
    sealed = _sealed(order) and not full_contact
    shown: list[str] = []
    phone = order.contact_phone
    if phone and not sealed:
        shown.append("phone")
    id_number = order.contact_id_number if full_contact else None
    if id_number:
        shown.append("id_number")
    name = None if order.anonymous or sealed else order.contact_name
    transcript = order.transcript if full_contact else [
        {**line, "text": redact(str(line.get("text", "")))} if isinstance(line, dict) else line
        for line in order.transcript
    ]
    return {
        "number": order.number,
        "profile": order.profile,
        "channel": order.channel,
        "category": order.category,
        "urgent": order.urgent,
        "urgent_reason": order.urgent_reason,
        "confidential": order.confidential,
        "status": order.status,
        "facts": order.facts,
        "contact": {"phone": (mask_phone(phone) if sealed else phone) or None, "name": name,
                    "id_number": id_number, "withheld": sealed},
        "anonymous": order.anonymous,
        "repeat_count": order.repeat_count,
        "escalated": order.escalated,
        "supplements": order.supplements,
        "created_at": order.created_at.isoformat(),
        "dispatch_due_at": order.dispatch_due_at.isoformat(),
        "due_at": order.due_at.isoformat(),
        "limit_working_days": order.limit_working_days,
        "transcript": transcript,
        "history": [{"status": e.status, "note": e.note, "at": e.at.isoformat()} for e in order.events],
    }, shown


async def get_ticket(request: web.Request) -> web.Response:
    who = await caller(request, "orders:read")
    if isinstance(who, web.Response):
        return who
    order = await get_by_number(request.app[SESSIONS], request.match_info["number"])
    if order is None:
        return json_error(404, "no such work order")
    view, shown = work_order_json(order, "contact:read" in who.scopes)
    if shown:  # the read is on record before the numbers leave
        async with request.app[SESSIONS]() as session:
            audit(session, None, "read_contact", name=f"token:{who.name}",
                  detail={"number": order.number, "fields": shown})
            await session.commit()
    return web.json_response(view)


async def get_media(request: web.Request) -> web.Response:
    """A picture or voice note a citizen sent, by channel and the media id in the work order's transcript."""
    who = await caller(request, "orders:read")
    if isinstance(who, web.Response):
        return who
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
    """Prometheus text format, for a token with the metrics:read scope."""
    who = await caller(request, "metrics:read")
    if isinstance(who, web.Response):
        return who
    body, content_type = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/api/tickets/{number}", get_ticket)
    app.router.add_get("/api/media/{channel}/{media_id}", get_media)
