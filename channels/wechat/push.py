"""The push endpoint, one URL per configured app:

GET  /wechat/{app}?signature&timestamp&nonce&echostr   URL verification: echostr back as is
POST /wechat/{app}?signature&timestamp&nonce[&encrypt_type=aes&msg_signature]   a message or event

A push is verified, parsed, stored (deduplicated by MsgId, or FromUserName + CreateTime for
events, across replicas) and acknowledged with `success` at once; the conversation is then queued for answering
(gateway/answering.py) and the replies leave through the outbox as customer-service messages. WeChat retries a push
it got no answer to within 5 s, so the answer must never wait for the bot.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels.wechat.api import (
    AccessTokens,
    DbTokenStore,
    MediaFetcher,
    RedisTokenStore,
    TokenStore,
    WeChatSender,
    media_fetches,
)
from channels.wechat.config import WeChatApp, load_apps
from channels.wechat.protocol import PushError, check_url_signature, open_push, to_inbound
from gateway.answering import Answering
from gateway.config import Settings
from gateway.http import read_limited
from gateway.outbox import SENDERS
from gateway.router import Router
from storage.conversations import Conversation
from storage.outbox import OutboxItem, enqueue

log = logging.getLogger(__name__)

ECHOSTR_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


@dataclass
class Runtime:
    router: Router
    answering: Answering
    sessions: async_sessionmaker[AsyncSession]
    max_body: int
    store: TokenStore


APPS = web.AppKey("wechat_apps", dict)
RUNTIME = web.AppKey("wechat_runtime", Runtime)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _app_for(request: web.Request) -> WeChatApp | None:
    return request.app[APPS].get(request.match_info["app"])


async def verify(request: web.Request) -> web.Response:
    app = _app_for(request)
    if app is None:
        return _error(404, "unknown WeChat app")
    try:
        check_url_signature(app.token, request.query)
    except PushError as exc:
        return _error(exc.status, exc.reason)
    echostr = request.query.get("echostr", "")
    if not ECHOSTR_RE.match(echostr):
        return _error(400, "echostr must be 1-128 printable characters")
    return web.Response(text=echostr)


async def push(request: web.Request) -> web.Response:
    app = _app_for(request)
    if app is None:
        return _error(404, "unknown WeChat app")
    runtime = request.app[RUNTIME]
    with runtime.answering.acknowledging():
        return await _accept(request, app, runtime)


async def _accept(request: web.Request, app: WeChatApp, runtime: Runtime) -> web.Response:
    try:
        check_url_signature(app.token, request.query)  # before reading the body: forgeries cost nothing
        raw = await read_limited(request, runtime.max_body)
        msg = to_inbound(app, open_push(app, request.query, raw))
    except PushError as exc:
        log.warning("wechat %s: push refused (%d): %s", app.name, exc.status, exc.reason)
        return _error(exc.status, exc.reason)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body larger than {runtime.max_body} bytes")
    conv = await runtime.router.accept(msg)
    if conv is not None:
        media_ids = media_fetches(msg.attachments)
        prepare = (lambda: _queue_media(runtime, app, conv, media_ids)) if media_ids else None
        runtime.answering.submit(conv, prepare)
    return web.Response(text="success")


async def _queue_media(runtime: Runtime, app: WeChatApp, conv: Conversation, media_ids: list[str]) -> None:
    """Before answering: queue the fetch of any picture or voice note (WeChat keeps them 3 days)."""
    async with runtime.sessions() as session:
        for media_id in media_ids:
            key = f"{app.media_channel}:{media_id}"[:128]
            if await session.scalar(select(OutboxItem.id).where(OutboxItem.dedupe_key == key)) is None:
                enqueue(session, channel=app.media_channel, recipient=conv.sender_id,
                        body={"media_id": media_id}, dedupe_key=key, conversation_id=conv.id)
        try:
            await session.commit()
        except IntegrityError:  # another replica queued the same fetch a moment ago
            await session.rollback()
    if runtime.router.on_enqueued is not None:
        runtime.router.on_enqueued()


def configure(app: web.Application, settings: Settings) -> None:
    """Read the apps at start, so a bad configuration stops the gateway with a clear message."""
    app[APPS] = load_apps(settings.wechat_apps)


def setup_runtime(
    app: web.Application,
    router: Router,
    answering: Answering,
    sessions: async_sessionmaker[AsyncSession],
    http: aiohttp.ClientSession,
    settings: Settings,
) -> None:
    store: TokenStore = RedisTokenStore(settings.redis_url) if settings.redis_url else DbTokenStore(sessions)
    app[RUNTIME] = Runtime(router, answering, sessions, settings.max_body_bytes, store)
    api_base = settings.wechat_api_base.rstrip("/")
    for wechat_app in app[APPS].values():
        router.outbox_channels.add(wechat_app.channel)
        tokens = AccessTokens(wechat_app, store, http, api_base, router.coordinator)
        app[SENDERS][wechat_app.channel] = WeChatSender(wechat_app, tokens, http, api_base, sessions, router.profile)
        app[SENDERS][wechat_app.media_channel] = MediaFetcher(wechat_app, tokens, http, api_base, sessions)


async def shutdown(app: web.Application) -> None:
    runtime = app.get(RUNTIME)
    if runtime is not None:
        await runtime.store.close()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/wechat/{app}", verify)
    app.router.add_post("/wechat/{app}", push)
