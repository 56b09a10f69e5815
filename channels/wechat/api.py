"""WeChat's server API over aiohttp: the access token (cached and shared by replicas) and the
customer-service message sender the outbox worker calls.

wechatpy's client is synchronous (requests); the two JSON calls we need are simpler to make with
the gateway's own aiohttp session than to push through a thread pool.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
import redis.asyncio as aioredis
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels.wechat import window
from channels.wechat.config import WeChatApp
from channels.wechat.models import WeChatToken
from common import buttons
from gateway.coordination import Coordinator
from gateway.http import read_capped
from storage.base import utcnow
from storage.media import Media
from storage.outbox import OutboxItem, SendResult

log = logging.getLogger(__name__)

TOKEN_ERRORS = {40001, 40014, 42001}  # invalid, malformed or expired access token: refresh once
WINDOW_ERRORS = {45015, 45047}  # outside the 48-hour window / too many replies: hold, use the fallback
PERMANENT_ERRORS = {40003, 40008, 43004, 45002, 48001, 61007}  # bad openid/type, content, not authorised
RATE_ERRORS = {45009, 45011}  # API quota: try again in a minute
TOKEN_MARGIN_S = 300  # stable_token renews 5 minutes early too
LOCAL_CACHE_S = 60  # a replica re-reads the shared token this often (a rejected one at once)
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


# What to do with a reply held outside the 48-hour window: (outbox item, the text as rendered).
Undeliverable = Callable[[OutboxItem, str], Awaitable[None]]


class TokenError(RuntimeError):
    """WeChat would not give us a token (wrong secret, IP not whitelisted, outage)."""


class TokenStore(Protocol):
    async def get(self, appid: str) -> str | None: ...

    async def put(self, appid: str, token: str, ttl_s: int) -> None: ...

    async def drop(self, appid: str, token: str) -> None:
        """Forget `token` unless another replica already replaced it."""

    async def close(self) -> None: ...


class RedisTokenStore:
    def __init__(self, url: str, prefix: str = "hotline:wechat:token:") -> None:
        self._redis = aioredis.from_url(url)
        self._prefix = prefix

    async def get(self, appid: str) -> str | None:
        value = await self._redis.get(self._prefix + appid)
        return value.decode() if value else None

    async def put(self, appid: str, token: str, ttl_s: int) -> None:
        await self._redis.set(self._prefix + appid, token, ex=ttl_s)

    async def drop(self, appid: str, token: str) -> None:
        if await self.get(appid) == token:
            await self._redis.delete(self._prefix + appid)

    async def close(self) -> None:
        await self._redis.aclose()


class DbTokenStore:
    """The same cache in the database, for a deployment without Redis."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def get(self, appid: str) -> str | None:
        async with self.sessions() as session:
            row = await session.get(WeChatToken, appid)
        if row is None:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=dt.UTC)  # SQLite
        return row.token if expires > utcnow() else None

    async def put(self, appid: str, token: str, ttl_s: int) -> None:
        # merge reads, then inserts: two replicas storing their first token at once race on the key.
        # The loser stores its token over the winner's (WeChat keeps both valid for a while).
        for attempt in (1, 2):
            async with self.sessions() as session:
                await session.merge(
                    WeChatToken(appid=appid, token=token, expires_at=utcnow() + dt.timedelta(seconds=ttl_s))
                )
                try:
                    await session.commit()
                    return
                except IntegrityError:
                    if attempt == 2:
                        raise

    async def drop(self, appid: str, token: str) -> None:
        async with self.sessions() as session:
            await session.execute(delete(WeChatToken).where(WeChatToken.appid == appid, WeChatToken.token == token))
            await session.commit()

    async def close(self) -> None:
        return None


class AccessTokens:
    """One app's token: from the shared store, else fetched once (a lock across replicas) with
    `cgi-bin/stable_token`, which hands every caller the same token instead of revoking the last one."""

    def __init__(
        self, app: WeChatApp, store: TokenStore, http: aiohttp.ClientSession, api_base: str, coordinator: Coordinator
    ) -> None:
        self.app, self.store, self.http, self.api_base, self.coordinator = app, store, http, api_base, coordinator
        self._local: tuple[str, float] | None = None  # (token, monotonic expiry): no store read per send

    def _remember(self, token: str) -> str:
        self._local = (token, time.monotonic() + LOCAL_CACHE_S)
        return token

    def _lock(self):  # noqa: ANN202 - an async context manager
        return self.coordinator.lock(f"wechat-token:{self.app.appid}", 30.0)

    async def get(self) -> str:
        if self._local is not None and self._local[1] > time.monotonic():
            return self._local[0]
        token = await self.store.get(self.app.appid)
        if token:
            return self._remember(token)
        async with self._lock():
            return self._remember(await self.store.get(self.app.appid) or await self._fetch(force=False))

    async def refresh(self, rejected: str) -> str:
        """WeChat said `rejected` is invalid or expired (40001/42001/40014): replace it once for everyone."""
        self._local = None
        async with self._lock():
            current = await self.store.get(self.app.appid)
            if current and current != rejected:
                return self._remember(current)  # another replica refreshed it already
            await self.store.drop(self.app.appid, rejected)
            token = await self._fetch(force=False)
            return self._remember(token if token != rejected else await self._fetch(force=True))

    async def _fetch(self, *, force: bool) -> str:
        body = {"grant_type": "client_credential", "appid": self.app.appid, "secret": self.app.secret,
                "force_refresh": force}
        try:
            async with self.http.post(f"{self.api_base}/cgi-bin/stable_token", json=body, timeout=HTTP_TIMEOUT) as resp:
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TokenError(f"stable_token unreachable: {type(exc).__name__}") from exc
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            code = data.get("errcode") if isinstance(data, dict) else None
            raise TokenError(f"stable_token refused: errcode {code}")
        ttl = int(data.get("expires_in") or 7200)
        await self.store.put(self.app.appid, token, max(60, ttl - TOKEN_MARGIN_S))
        log.info("wechat %s: new access token (force=%s)", self.app.name, force)
        return token


def render(body: dict[str, Any]) -> str:
    """Customer-service text cannot carry buttons: they become a numbered line the citizen can answer
    with (the router maps a number or a title back to the button's payload)."""
    return buttons.as_text(str(body.get("text", "")), body.get("buttons"), own_line=True)


class WeChatSender:
    """Delivers outbox items of one app with `cgi-bin/message/custom/send`. A reply WeChat will not
    deliver now (outside the 48-hour window) is held, and `undeliverable` decides how else to reach
    the citizen: a policy of the gateway's, since it may look up work orders and use another channel."""

    def __init__(
        self,
        app: WeChatApp,
        tokens: AccessTokens,
        http: aiohttp.ClientSession,
        api_base: str,
        undeliverable: Undeliverable,
        sessions: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        """`sessions`: to count the customer-service quota (window.py) before calling WeChat."""
        self.app, self.tokens, self.http, self.api_base = app, tokens, http, api_base
        self.undeliverable, self.sessions = undeliverable, sessions

    async def send(self, item: OutboxItem) -> SendResult:
        text = render(item.body)
        if self.sessions is not None:
            left = await window.allowance(self.sessions, item.channel, item.recipient, utcnow(), in_flight=False)
            if left is not None and left.left <= 0:  # WeChat would answer 45015 or 45047: do not ask
                await self.undeliverable(item, text)
                why = "outside the 48-hour window" if left.until is None else "5 messages since the citizen's last"
                return SendResult("held", error=f"customer-service quota used ({why})")
        payload = {"touser": item.recipient, "msgtype": "text", "text": {"content": text}}
        try:
            token = await self.tokens.get()
            code, message = await self._post(token, payload)
            if code in TOKEN_ERRORS:
                token = await self.tokens.refresh(token)
                code, message = await self._post(token, payload)
        except TokenError as exc:
            return SendResult("retry", error=str(exc), retry_after_s=60)
        except aiohttp.ClientResponseError as exc:
            return SendResult("retry", error=f"custom/send: HTTP {exc.status}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return SendResult("retry", error=f"custom/send unreachable: {type(exc).__name__}")
        error = f"errcode {code}: {message}"[:500]
        if code == 0:
            return SendResult("sent")
        if code in WINDOW_ERRORS:
            await self.undeliverable(item, text)
            return SendResult("held", error=error)
        if code in PERMANENT_ERRORS:
            return SendResult("failed", error=error)
        return SendResult("retry", error=error, retry_after_s=60 if code in RATE_ERRORS else None)

    async def _post(self, token: str, payload: dict[str, Any]) -> tuple[int, str]:
        async with self.http.post(
            f"{self.api_base}/cgi-bin/message/custom/send",
            params={"access_token": token},
            # UTF-8, as WeChat's SDKs send it: \uXXXX escapes triple the bytes of Chinese text
            data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=HTTP_TIMEOUT,
        ) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            data = await resp.json(content_type=None)
        if not isinstance(data, dict):
            raise ValueError("custom/send answered something other than an object")
        return int(data.get("errcode", 0) or 0), str(data.get("errmsg", ""))


MEDIA_KINDS = {"image", "voice", "video", "shortvideo"}
MAX_MEDIA_BYTES = 10 * 1024 * 1024  # WeChat's temporary media: images ≤10 MB, voice ≤2 MB, video ≤10 MB
MEDIA_GONE = {40007, 40008, 41006}  # invalid or missing media id: nothing to fetch, ever


def media_fetches(attachments: tuple[dict[str, Any], ...]) -> list[str]:
    """The media ids worth fetching from one message's attachments."""
    return [a["media_id"] for a in attachments if a.get("type") in MEDIA_KINDS and a.get("media_id")]


class MediaFetcher:
    """Fetches a citizen's picture or voice note (`cgi-bin/media/get`) into the `media` table before
    WeChat forgets it (3 days). Registered as the outbox sender of `wxmedia:<app>`: an outbox item
    there is a fetch, with the outbox's leases, retries and backoff."""

    def __init__(
        self,
        app: WeChatApp,
        tokens: AccessTokens,
        http: aiohttp.ClientSession,
        api_base: str,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self.app, self.tokens, self.http, self.api_base, self.sessions = app, tokens, http, api_base, sessions

    async def send(self, item: OutboxItem) -> SendResult:
        media_id = str(item.body.get("media_id", ""))
        try:
            token = await self.tokens.get()
            code, data, content_type = await self._get(token, media_id)
            if code in TOKEN_ERRORS:
                code, data, content_type = await self._get(await self.tokens.refresh(token), media_id)
        except TokenError as exc:
            return SendResult("retry", error=str(exc), retry_after_s=60)
        except aiohttp.ClientResponseError as exc:  # its text holds the URL, i.e. the access token: not logged
            return SendResult("retry", error=f"media/get: HTTP {exc.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return SendResult("retry", error=f"media/get: {type(exc).__name__}")
        except ValueError as exc:  # too large, or not JSON where an error was announced
            return SendResult("failed", error=f"media/get: {exc}"[:300])
        if code in MEDIA_GONE:
            return SendResult("failed", error=f"errcode {code}: media id unknown or expired")
        if code:
            return SendResult("retry", error=f"errcode {code}", retry_after_s=60 if code in RATE_ERRORS else None)
        async with self.sessions() as session:
            exists = await session.scalar(
                select(Media.id).where(Media.channel == self.app.channel, Media.media_id == media_id)
            )
            if exists is None:
                session.add(Media(channel=self.app.channel, media_id=media_id, content_type=content_type,
                                  size=len(data), sha256=hashlib.sha256(data).hexdigest(), data=data))
                await session.commit()
        return SendResult("sent", provider_id=media_id[:128])

    async def _get(self, token: str, media_id: str) -> tuple[int, bytes, str]:
        """(errcode, bytes, content type): WeChat answers an error as JSON, a file as itself."""
        async with self.http.get(
            f"{self.api_base}/cgi-bin/media/get",
            params={"access_token": token, "media_id": media_id},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            if resp.content_length is not None and resp.content_length > MAX_MEDIA_BYTES:
                raise ValueError(f"media larger than {MAX_MEDIA_BYTES} bytes")
            data = await read_capped(resp.content, MAX_MEDIA_BYTES)
            if data is None:
                raise ValueError(f"media larger than {MAX_MEDIA_BYTES} bytes")
            content_type = resp.content_type or "application/octet-stream"
        if content_type in ("application/json", "text/plain"):
            answer = json.loads(data.decode("utf-8", "replace"))
            code = int(answer.get("errcode", 0) or 0) if isinstance(answer, dict) else -1
            if code or not isinstance(answer, dict):
                return code or -1, b"", content_type
        return 0, data, content_type[:100]
