"""The push endpoint, one URL per configured app:

GET  /wechat/{app}?signature&timestamp&nonce&echostr   URL verification: echostr back as is
POST /wechat/{app}?signature&timestamp&nonce[&encrypt_type=aes&msg_signature]   a message or event

A push is verified, parsed, stored (deduplicated by MsgId, or FromUserName + CreateTime for
events, across replicas) and acknowledged with `success` at once; the conversation is then queued for answering
(gateway/answering.py) and the replies leave through the outbox as customer-service messages. WeChat retries a push
it got no answer to within 5 s, so the answer must never wait for the bot.

The signature covers only timestamp and nonce (not the body, in plaintext mode), so a captured query
would sign any body: the timestamp must be within `wechat_max_skew_s` of our clock, and a nonce is
taken with one body only (WeChat's retries of the same push carry the same body and pass).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from channels.base import ChannelContext, Intake
from channels.wechat import window
from channels.wechat.api import (
    AccessTokens,
    DbTokenStore,
    MediaFetcher,
    RedisTokenStore,
    TokenStore,
    Undeliverable,
    WeChatSender,
    media_fetches,
)
from channels.wechat.config import WeChatApp, load_apps
from channels.wechat.protocol import Forbidden, PushError, check_url_signature, open_push, to_inbound
from common.messages import NotKept, Reply
from gateway.config import Settings
from gateway.http import json_error, read_limited
from storage.base import utcnow
from storage.conversations import Conversation
from storage.outbox import Allowance, OutboxItem, Sender, enqueue

log = logging.getLogger(__name__)

NAME = "wechat"
ECHOSTR_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


class WeChatChannel:
    """Every configured WeChat app (official account, mini program): the push URL in, customer-service
    messages out through the outbox, and the fetch of the media citizens send."""

    name = NAME

    def __init__(self, settings: Settings) -> None:
        self.apps: dict[str, WeChatApp] = load_apps(settings.wechat_apps)  # a bad configuration stops the start
        self.max_body = settings.max_body_bytes
        self.max_skew_s = settings.wechat_max_skew_s
        self.now: Callable[[], float] = time.time
        self._intake: Intake | None = None
        self._context: ChannelContext | None = None
        self._store: TokenStore | None = None
        self._senders: dict[str, Sender] = {}

    @property
    def intake(self) -> Intake:
        assert self._intake is not None, "the WeChat channel is used before the app started it"
        return self._intake

    async def start(self, context: ChannelContext, undeliverable: Undeliverable | None = None) -> None:
        """`undeliverable`: what to do with a reply held outside the 48-hour window (kept if None)."""
        settings = context.settings
        self._intake, self._context = context.intake, context
        store: TokenStore = RedisTokenStore(settings.redis_url) if settings.redis_url else DbTokenStore(context.sessions)
        self._store = store
        api_base = settings.wechat_api_base.rstrip("/")
        for wechat_app in self.apps.values():
            tokens = AccessTokens(wechat_app, store, context.http, api_base, context.coordinator)
            self._senders[wechat_app.channel] = WeChatSender(wechat_app, tokens, context.http, api_base,
                                                             undeliverable or _keep, context.sessions)
            self._senders[wechat_app.media_channel] = MediaFetcher(wechat_app, tokens, context.http, api_base,
                                                                   context.sessions)

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.close()

    def senders(self) -> Mapping[str, Sender]:
        return self._senders

    def outbox_channels(self) -> set[str]:
        return {wechat_app.channel for wechat_app in self.apps.values()}

    async def forget(self, session: AsyncSession, before: dt.datetime) -> dict[str, int]:
        return {}  # its one table holds the apps' access tokens, nothing of citizens

    async def allowance(self, channel: str, openid: str) -> Allowance | None:
        """What is left of the customer-service quota for this citizen (None: not a WeChat chat, or
        nothing to count from)."""
        if channel not in self.outbox_channels() or self._context is None:
            return None
        return await window.allowance(self._context.sessions, channel, openid, utcnow())

    async def push(self, channel: str, sender_id: str, replies: list[Reply]) -> bool:
        return False  # replies produced later go through the outbox

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/wechat/{app}", self.verify)
        app.router.add_post("/wechat/{app}", self.receive)

    async def verify(self, request: web.Request) -> web.Response:
        app = self.apps.get(request.match_info["app"])
        if app is None:
            return json_error(404, "unknown WeChat app")
        try:
            check_url_signature(app.token, request.query)
        except PushError as exc:
            return json_error(exc.status, exc.reason)
        echostr = request.query.get("echostr", "")
        if not ECHOSTR_RE.match(echostr):
            return json_error(400, "echostr must be 1-128 printable characters")
        return web.Response(text=echostr)

    async def receive(self, request: web.Request) -> web.Response:
        app = self.apps.get(request.match_info["app"])
        if app is None:
            return json_error(404, "unknown WeChat app")
        with self.intake.acknowledging():
            return await self._accept(request, app)

    async def _accept(self, request: web.Request, app: WeChatApp) -> web.Response:
        try:
            check_url_signature(app.token, request.query)  # before reading the body: forgeries cost nothing
            raw = await read_limited(request, self.max_body)
            msg = to_inbound(app, open_push(app, request.query, raw))
            await self._once(app, request.query, raw)
        except PushError as exc:
            log.warning("wechat %s: push refused (%d): %s", app.name, exc.status, exc.reason)
            return json_error(exc.status, exc.reason)
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, f"body larger than {self.max_body} bytes")
        conv = await self.intake.accept(msg)
        if conv is not None:
            media_ids = media_fetches(msg.attachments)
            prepare = (lambda: self._queue_media(app, conv, media_ids)) if media_ids else None
            self.intake.answer_later(conv, prepare)
        return web.Response(text="success")

    async def _once(self, app: WeChatApp, query: Mapping[str, str], raw: bytes) -> None:
        """Refuse a replay: a timestamp outside the window, or a nonce already taken with another body."""
        assert self._context is not None
        try:
            signed_at = int(query["timestamp"])
        except ValueError as exc:
            raise Forbidden("timestamp must be a number of seconds") from exc
        if abs(self.now() - signed_at) > self.max_skew_s:
            raise Forbidden("timestamp outside the accepted window (a replay, or a clock off)")
        key = f"wechat-nonce:{app.name}:{signed_at}:{query['nonce']}"
        ttl = min(2 * self.max_skew_s + 60, 7 * 24 * 3600)
        coordinator = self._context.coordinator
        digest = hashlib.sha256(raw).hexdigest()
        try:  # one atomic claim of the nonce with the body: retries racing their original agree
            first = await coordinator.claim_value(key, digest, ttl)
        except Exception as exc:  # coordination down: refuse for now, WeChat retries
            log.warning("wechat %s: nonce check unavailable (%s)", app.name, type(exc).__name__)
            raise NotKept from exc
        if first != digest:
            raise Forbidden("nonce already used with another body (a replay)")

    async def _queue_media(self, app: WeChatApp, conv: Conversation, media_ids: list[str]) -> None:
        """Before answering: queue the fetch of any picture or voice note (WeChat keeps them 3 days)."""
        assert self._context is not None
        async with self._context.sessions() as session:
            for media_id in media_ids:
                key = f"{app.media_channel}:{media_id}"[:128]
                if await session.scalar(select(OutboxItem.id).where(OutboxItem.dedupe_key == key)) is None:
                    enqueue(session, channel=app.media_channel, recipient=conv.sender_id,
                            body={"media_id": media_id}, dedupe_key=key, conversation_id=conv.id)
            try:
                await session.commit()
            except IntegrityError:  # another replica queued the same fetch a moment ago
                await session.rollback()
        self.intake.wake_outbox()


async def _keep(item: OutboxItem, text: str) -> None:
    """No policy given: the held reply stays held."""
