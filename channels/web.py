"""The web chat channel: Rasa's REST webhook shape, a WebSocket for the page, and the page itself.

POST /webhooks/rest/webhook  {"sender","message","metadata"?,"message_id"?} → [{"recipient_id","text","buttons"?}]
GET  /ws?sender=…            JSON frames {"text","message_id"?} in, {"type":"reply","text","buttons"} out
GET  /                       the chat page
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from sqlalchemy.ext.asyncio import AsyncSession

from channels.base import ChannelContext, Intake
from common.messages import NOT_KEPT_RETRY_AFTER_S, NOT_KEPT_TEXT, InboundMessage, NotKept, Reply
from gateway import http
from gateway.coordination import Coordinator
from gateway.http import json_error, read_limited
from storage.outbox import Sender

log = logging.getLogger(__name__)

NAME = "web"
STATIC = Path(__file__).resolve().parent / "web_static"
ALLOWED_FIELDS = {"sender", "message", "metadata", "message_id", "input_channel"}
SENDER_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
EMPTY_TEXT = "请输入您要反映的内容，例如发生了什么事、在什么地方。"
BUSY_TEXT = "您发送得太快了，这条消息没有保存，请稍等一分钟后再发送。紧急情况请直接拨打110、119、120或122。"


class BadRequest(ValueError):
    """Client error with a message a developer can act on."""


def load_json(raw: bytes | str) -> Any:
    try:
        return http.load_json(raw)
    except http.BadJson as exc:
        raise BadRequest(str(exc)) from exc


def parse_rest_body(raw: bytes) -> InboundMessage:
    """Validate the REST body strictly: a typo in a field name should fail loudly, not vanish."""
    data = load_json(raw)
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(data) - ALLOWED_FIELDS)
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(unknown)}; allowed: {', '.join(sorted(ALLOWED_FIELDS))}")
    sender, message = data.get("sender"), data.get("message", "")
    if not isinstance(sender, str) or not SENDER_RE.match(sender):
        raise BadRequest("sender must be 1-128 characters of letters, digits or _.:@-")
    if not isinstance(message, str):
        raise BadRequest("message must be a string")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise BadRequest("metadata must be an object")
    message_id = data.get("message_id") or metadata.get("message_id")
    if message_id is not None and (not isinstance(message_id, str) or not 0 < len(message_id) <= 128):
        raise BadRequest("message_id must be a string of 1-128 characters")
    return InboundMessage(channel=NAME, sender_id=sender, text=message.strip(), message_id=message_id or None)


class AddressWindow:
    """Messages per client address in the current minute, so a client cannot flood the service by
    using a new sender id for every message. Counted by the coordinator: in Redis when replicas
    share one, so a client spread over replicas by the balancer gets the limit once, not per replica."""

    def __init__(self, per_minute: int, coordinator: Coordinator | None = None) -> None:
        self.per_minute = per_minute
        self.coordinator = coordinator

    async def allow(self, address: str | None) -> bool:
        if self.per_minute <= 0 or self.coordinator is None:
            return True
        return await self.coordinator.allow(f"web-address:{address or '?'}", self.per_minute, 60)


def _frame(reply: Reply) -> dict[str, Any]:
    return {"type": "reply", "text": reply.text, "buttons": [dict(b) for b in reply.buttons]}


async def rest_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


class WebChannel:
    """The chat page and Rasa's REST webhook: answered in the response, and pushed to the open page
    when the answer comes later (the bot was down)."""

    name = NAME

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._intake: Intake | None = None
        self._sockets: dict[str, weakref.WeakSet[web.WebSocketResponse]] = {}
        self._origins: frozenset[str] = frozenset()
        self._addresses = AddressWindow(0)

    @property
    def intake(self) -> Intake:
        assert self._intake is not None, "the web channel is used before the app started it"
        return self._intake

    async def start(self, context: ChannelContext) -> None:
        self._intake = context.intake
        settings = context.settings
        self._origins = frozenset(o.strip().rstrip("/") for o in settings.web_origins.split(",") if o.strip())
        self._addresses = AddressWindow(settings.web_address_per_minute, context.coordinator)

    async def stop(self) -> None:
        return None

    def senders(self) -> Mapping[str, Sender]:
        return {}

    def outbox_channels(self) -> set[str]:
        return set()

    async def forget(self, session: AsyncSession, before: dt.datetime) -> dict[str, int]:
        return {}  # the web channel keeps no table of its own

    async def handle_message(self, msg: InboundMessage) -> list[Reply]:
        if not msg.text:
            return [Reply(EMPTY_TEXT)]
        return await self.intake.handle(msg)

    async def rest_webhook(self, request: web.Request) -> web.Response:
        try:
            msg = parse_rest_body(await read_limited(request, self.max_body))
        except BadRequest as exc:
            return json_error(400, str(exc))
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, f"body larger than {self.max_body} bytes")
        if not await self._addresses.allow(request.remote):
            return web.json_response({"error": BUSY_TEXT}, status=429, headers={"Retry-After": "60"})
        replies = await self.handle_message(msg)
        return web.json_response([r.as_rest(msg.sender_id) for r in replies])

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        sender = request.query.get("sender", "")
        if not SENDER_RE.match(sender):
            raise web.HTTPBadRequest(text="sender query parameter required (1-128 letters, digits or _.:@-)")
        origin = request.headers.get("Origin")
        # Same origin by host (a proxy ending TLS makes our scheme http while the page's is https).
        if origin is not None and origin.rstrip("/") not in self._origins and origin.partition("://")[2] != request.host:
            raise web.HTTPForbidden(text="this page's origin may not open the chat socket (HOTLINE_WEB_ORIGINS)")
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=self.max_body)
        await ws.prepare(request)
        self._sockets.setdefault(sender, weakref.WeakSet()).add(ws)
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                try:
                    data = load_json(frame.data)
                    if not isinstance(data, dict) or not isinstance(data.get("text", ""), str):
                        raise BadRequest("frame must be an object with a string 'text'")
                    message_id = data.get("message_id")
                    if message_id is not None and (not isinstance(message_id, str)
                                                   or not 0 < len(message_id) <= 128):
                        raise BadRequest("message_id must be a string of 1-128 characters")
                    text = data.get("text", "")
                except BadRequest as exc:
                    await ws.send_json({"type": "error", "error": str(exc)})
                    continue
                if not await self._addresses.allow(request.remote):
                    await ws.send_json({"type": "error", "error": BUSY_TEXT, "message_id": message_id,
                                        "retry_after": 60})
                    continue
                msg = InboundMessage(NAME, sender, text.strip(), message_id=message_id)
                try:
                    replies = await self.handle_message(msg)
                except NotKept:
                    await ws.send_json({"type": "error", "error": NOT_KEPT_TEXT, "message_id": message_id,
                                        "retry_after": NOT_KEPT_RETRY_AFTER_S})
                    continue
                for reply in replies:
                    await ws.send_json(_frame(reply))
                await ws.send_json({"type": "done", "message_id": message_id})
        finally:
            self._sockets.get(sender, weakref.WeakSet()).discard(ws)
        return ws

    async def push(self, channel: str, sender_id: str, replies: list[Reply]) -> bool:
        """Replies produced later (the bot came back) go to the citizen's open page, if any."""
        if channel != NAME:
            return False
        sent = False
        for ws in list(self._sockets.get(sender_id, ())):
            if not ws.closed:
                for reply in replies:
                    await ws.send_json(_frame(reply))
                sent = True
        return sent

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", index)
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/webhooks/rest/", rest_health)
        app.router.add_post("/webhooks/rest/webhook", self.rest_webhook)
        app.router.add_get("/ws", self.websocket)
