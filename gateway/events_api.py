"""Work-order events from handling units: the built-in backend's API and an external ticket system's
signed callback take the same payload and move the order along (handoff/lifecycle.py).

POST /api/tickets/{number}/events   Authorization: Bearer …
     {"event": "dispatched|signed|extended|returned|replied|closed", "note"?, "answer"? (replied),
      "days"? (extended), "event_id"? (repeat-safe)}
POST /callbacks/tickets/events      X-Hotline-Timestamp: unix seconds, X-Hotline-Signature: sha256=<hex>
     HMAC-SHA256(secret, f"{timestamp}.{raw body}"); same payload plus "number", "event_id" required.

Signed callbacks are rejected outside the replay window; within it the event_id makes a replay a
no-op. The answer is a masked view: handling units see what they need, not the citizen's number.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from typing import Any

from aiohttp import web
from sqlalchemy import select

from common.text import mask_phone
from gateway.api import caller
from gateway.http import json_error, load_json, read_limited
from handoff.events import WorkOrderEvents
from handoff.lifecycle import ALLOWED, PUBLIC_EVENTS, TransitionError
from handoff.models import Survey, WorkOrder
from handoff.notify import sign as signature
from handoff.ratings import LABELS
from handoff.survey import SurveyService

SURVEYS = web.AppKey("surveys", SurveyService)
EVENTS = web.AppKey("work_order_events", WorkOrderEvents)
SECRET = web.AppKey("ticket_callback_secret", str)
WINDOW = web.AppKey("ticket_callback_window_s", int)
MAX_BODY = 16 * 1024
FIELDS = {"event", "note", "answer", "days", "event_id", "number"}


def order_view(order: WorkOrder) -> dict[str, Any]:
    return {
        "number": order.number,
        "status": order.status,
        "category": order.category,
        "due_at": order.due_at.isoformat(),
        "limit_working_days": order.limit_working_days,
        "contact": {"phone": mask_phone(order.contact_phone) if order.contact_phone else order.contact_phone},
        "history": [{"status": e.status, "note": e.note, "at": e.at.isoformat()} for e in order.events],
    }


def parse_event(data: Any, *, need_number: bool) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}")
    event = data.get("event")
    if event not in PUBLIC_EVENTS:
        raise ValueError(f"event must be one of {', '.join(PUBLIC_EVENTS)}")
    for key in ("note", "answer", "event_id", "number"):
        if key in data and not isinstance(data[key], str):
            raise ValueError(f"{key} must be a string")
    if len(data.get("note", "")) > 2000 or len(data.get("answer", "")) > 2000:
        raise ValueError("note and answer are limited to 2000 characters")
    event_id = data.get("event_id")
    if event_id is not None and not 0 < len(event_id) <= 128:
        raise ValueError("event_id must be 1-128 characters")
    days = data.get("days")
    if days is not None and (not isinstance(days, int) or isinstance(days, bool)):
        raise ValueError("days must be an integer")
    if need_number and not (isinstance(data.get("number"), str) and data["number"]):
        raise ValueError("number is required")
    if need_number and not event_id:
        raise ValueError("event_id is required on callbacks (it makes a replay harmless)")
    return data


async def _apply(request: web.Request, number: str, data: dict[str, Any], source: str) -> web.Response:
    try:
        order, applied = await request.app[EVENTS].record(
            number, data["event"], note=data.get("note", ""), answer=data.get("answer", ""), days=data.get("days"),
            event_key=data.get("event_id"), source=source,
        )
    except TransitionError as exc:  # the table comes with the refusal: an integrator sees what would do
        return web.json_response({"error": str(exc), "allowed": {e: list(ALLOWED[e]) for e in PUBLIC_EVENTS}},
                                 status=409)
    if order is None:
        return json_error(404, "no such work order")
    return web.json_response({"applied": applied, "order": order_view(order)})


async def _body(request: web.Request) -> bytes | web.Response:
    try:
        return await read_limited(request, MAX_BODY)
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, f"body larger than {MAX_BODY} bytes")


async def post_event(request: web.Request) -> web.Response:
    who = await caller(request, "events:write")
    if isinstance(who, web.Response):
        return who
    raw = await _body(request)
    if isinstance(raw, web.Response):
        return raw
    try:
        data = parse_event(load_json(raw), need_number=False)
    except ValueError as exc:  # BadJson is a ValueError
        return json_error(400, str(exc))
    return await _apply(request, request.match_info["number"], data, "api")


async def post_callback(request: web.Request) -> web.Response:
    secret = request.app[SECRET]
    if not secret:
        return json_error(503, "ticket callbacks are not configured (HOTLINE_TICKET_CALLBACK_SECRET)")
    raw = await _body(request)
    if isinstance(raw, web.Response):
        return raw
    timestamp = request.headers.get("X-Hotline-Timestamp", "")
    given = request.headers.get("X-Hotline-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > request.app[WINDOW]:
        return json_error(401, "timestamp missing or outside the replay window")
    if not hmac.compare_digest(given.encode(), signature(secret, timestamp, raw).encode()):
        return json_error(401, "bad signature")
    try:
        data = parse_event(load_json(raw), need_number=True)
    except ValueError as exc:
        return json_error(400, str(exc))
    return await _apply(request, data["number"], data, "callback")


async def get_survey(request: web.Request) -> web.Response:
    """The survey rounds of an order: status, rating, whether and why defaulted, and its timers
    (send_at, default_at), so an operator sees what will happen when (no phone numbers)."""
    who = await caller(request, "orders:read")
    if isinstance(who, web.Response):
        return who
    service = request.app[SURVEYS]
    async with service.sessions() as session:
        order = await session.scalar(select(WorkOrder).where(WorkOrder.number == request.match_info["number"]))
        if order is None:
            return json_error(404, "no such work order")
        rows = (await session.scalars(select(Survey).where(Survey.work_order_id == order.id).order_by(Survey.round)))
        window_h = service.profile_for(order.profile).survey.window_hours
        return web.json_response({"number": order.number, "surveys": [
            {"round": s.round, "status": s.status, "rating": s.rating, "label": LABELS.get(s.rating or ""),
             "defaulted": s.defaulted, "outcome": s.outcome, "corrections": s.corrections,
             "send_at": s.send_at.isoformat(),
             "sent_at": s.sent_at.isoformat() if s.sent_at else None,
             "due_at": s.due_at.isoformat() if s.due_at else None,
             # when the default applies if no reply meant for it comes; once defaulted, why
             "default_at": _default_at(s, window_h),
             "default_reason": next((h.get("reason") for h in reversed(s.history)
                                     if isinstance(h, dict) and h.get("meaning") == "default"), None)}
            for s in rows.all()
        ]})


def _default_at(survey: Survey, window_h: float) -> str | None:
    """When the default applies if no reply meant for the survey comes: the window's end once sent,
    send_at plus the window before (the window starts when the provider accepts the SMS)."""
    if survey.status == "open" and survey.due_at is not None:
        return survey.due_at.isoformat()
    if survey.status in ("scheduled", "queued"):
        return (survey.send_at + dt.timedelta(hours=window_h)).isoformat()
    return None


def setup_runtime(app: web.Application, surveys: SurveyService, secret: str, window_s: int) -> None:
    app[SURVEYS] = surveys
    app[EVENTS] = WorkOrderEvents(surveys)
    app[SECRET] = secret
    app[WINDOW] = window_s


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/tickets/{number}/events", post_event)
    app.router.add_get("/api/tickets/{number}/survey", get_survey)
    app.router.add_post("/callbacks/tickets/events", post_callback)
