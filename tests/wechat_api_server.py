"""A local stand-in for WeChat on loopback: its server API (access tokens, customer-service
messages, with the 48-hour / 5-reply window and errors on demand) and its push side (a simulated
citizen whose messages are signed and encrypted the way WeChat does it, with wechatpy).

Used by the tests and by bench/wechat_ack.py; nothing here imports the gateway's WeChat code.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, or_, select
from wechatpy.crypto import PrpCrypto
from wechatpy.utils import WeChatSigner

from storage.base import utcnow
from storage.conversations import Message
from storage.outbox import OutboxItem

WINDOW_REPLIES = 5  # replies allowed per citizen message (mini-program and official account rules)


def sha1_sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


@dataclass
class SentMessage:
    appid: str
    touser: str
    content: str
    raw: bytes = b""  # the body as it came over the wire


@dataclass
class WeChatAPIServer:
    """`cgi-bin/stable_token`, `cgi-bin/token` and `cgi-bin/message/custom/send` as WeChat answers them."""

    secrets_by_appid: dict[str, str]
    sent: list[SentMessage] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    send_attempts: int = 0
    scripted: list[int] = field(default_factory=list)  # errcodes for the next custom/send calls
    enforce_window: bool = True
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # media id -> (bytes, content type)
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (appid, expires at)
    _current: dict[str, str] = field(default_factory=dict)  # appid -> current token
    _window: dict[tuple[str, str], int] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/cgi-bin/stable_token", self.stable_token)
        app.router.add_get("/cgi-bin/token", self.token)
        app.router.add_post("/cgi-bin/message/custom/send", self.custom_send)
        app.router.add_get("/cgi-bin/media/get", self.media_get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what the test controls -------------------------------------------------------------
    def user_wrote(self, appid: str, openid: str) -> None:
        """A citizen message opens (or resets) the window: 5 replies within 48 hours."""
        self._window[(appid, openid)] = WINDOW_REPLIES

    def close_window(self, appid: str, openid: str) -> None:
        """48 hours passed without a citizen message: WeChat answers 45015."""
        self._window.pop((appid, openid), None)

    def expire_tokens(self) -> None:
        """Every token issued so far is expired (42001) from now on."""
        self._tokens = {t: (appid, 0.0) for t, (appid, _) in self._tokens.items()}
        self._current.clear()

    def revoke_tokens(self) -> None:
        """Every token issued so far is invalid (40001), e.g. the AppSecret was reset."""
        self._tokens.clear()
        self._current.clear()

    def to(self, openid: str) -> list[str]:
        return [m.content for m in self.sent if m.touser == openid]

    # --- the API ----------------------------------------------------------------------------
    def _issue(self, appid: str, force: bool) -> dict[str, Any]:
        current = self._current.get(appid)
        if current and not force and self._tokens.get(current, ("", 0))[1] > time.time():
            return {"access_token": current, "expires_in": int(self._tokens[current][1] - time.time())}
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (appid, time.time() + 7200)
        self._current[appid] = token
        return {"access_token": token, "expires_in": 7200}

    def _credentials_error(self, appid: str, secret: str) -> dict[str, Any] | None:
        if appid not in self.secrets_by_appid:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if secret != self.secrets_by_appid[appid]:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        return None

    async def stable_token(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.token_requests.append({k: v for k, v in body.items() if k != "secret"})
        if body.get("grant_type") != "client_credential":
            return web.json_response({"errcode": 40002, "errmsg": "invalid grant_type"})
        error = self._credentials_error(str(body.get("appid")), str(body.get("secret")))
        return web.json_response(error or self._issue(body["appid"], bool(body.get("force_refresh"))))

    async def token(self, request: web.Request) -> web.Response:
        q = request.query
        self.token_requests.append({"appid": q.get("appid"), "classic": True})
        error = self._credentials_error(q.get("appid", ""), q.get("secret", ""))
        return web.json_response(error or self._issue(q["appid"], True))

    def _token_error(self, token: str | None) -> web.Response | None:
        if not token:
            return web.json_response({"errcode": 41001, "errmsg": "access_token missing"})
        if token not in self._tokens:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"})
        if self._tokens[token][1] <= time.time():
            return web.json_response({"errcode": 42001, "errmsg": "access_token expired"})
        return None

    async def media_get(self, request: web.Request) -> web.Response:
        """Temporary media as WeChat serves it: the file itself, or a JSON error."""
        error = self._token_error(request.query.get("access_token"))
        if error is not None:
            return error
        found = self.media.get(request.query.get("media_id", ""))
        if found is None:
            return web.json_response({"errcode": 40007, "errmsg": "invalid media_id"})
        return web.Response(body=found[0], content_type=found[1])

    async def custom_send(self, request: web.Request) -> web.Response:
        self.send_attempts += 1
        token = request.query.get("access_token")
        error = self._token_error(token)
        if error is not None:
            return error
        appid = self._tokens[str(token)][0]
        raw = await request.read()
        try:
            body = json.loads(raw.decode("utf-8"))
            assert body["msgtype"] == "text" and isinstance(body["text"]["content"], str) and body["text"]["content"]
            touser = body["touser"]
        except (ValueError, KeyError, TypeError, AssertionError):
            return web.json_response({"errcode": 44002, "errmsg": "empty post data or bad message"})
        if self.scripted:
            code = self.scripted.pop(0)
            return web.json_response({"errcode": code, "errmsg": f"scripted {code}"})
        if self.enforce_window:
            left = self._window.get((appid, touser))
            if left is None:
                return web.json_response({"errcode": 45015, "errmsg": "response out of time limit"})
            if left <= 0:
                return web.json_response({"errcode": 45047, "errmsg": "out of response count limit"})
            self._window[(appid, touser)] = left - 1
        self.sent.append(SentMessage(appid, touser, body["text"]["content"], raw))
        return web.json_response({"errcode": 0, "errmsg": "ok"})


class SlowBot:
    """Speaks Rasa's REST webhook; answers after `delay_s`."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.messages: list[str] = []  # in the order they reached the bot
        self.outputs: dict[str, Any] = {}  # message text → what to answer instead (a poison output)
        self.down = False  # answers 502, as Rasa behind a proxy that lost it

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.down:
            return web.Response(status=502, text="bot down")
        self.calls += 1
        self.messages.append(body["message"])
        if body["message"] in self.outputs:
            return web.json_response(self.outputs[body["message"]])
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        return web.json_response([{"recipient_id": body["sender"], "text": "您的留言已收到，请问事情发生在什么地方？"}])

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="Hello from Rasa: 3.6.21")

    async def start(self) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_post("/webhooks/rest/webhook", self.webhook)
        app.router.add_get("/", self.health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, f"http://127.0.0.1:{port}"


@dataclass
class AppSpec:
    """What the WeChat console holds for one app (the gateway gets the same values)."""

    name: str
    appid: str
    token: str
    aes_key: str
    mode: str  # plaintext | compatible | secure
    format: str  # xml | json
    secret: str = "test-secret"
    kind: str = "miniprogram"
    original_id: str = "gh_97417a04a28d"

    def config(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "appid": self.appid, "secret": self.secret,
                "token": self.token, "encoding_aes_key": self.aes_key, "mode": self.mode, "format": self.format}


def render(fields: dict[str, Any], fmt: str) -> bytes:
    if fmt == "json":
        return json.dumps(fields, ensure_ascii=False).encode()
    inner = "".join(
        f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items()
    )
    return f"<xml>{inner}</xml>".encode()


def signed_push(spec: AppSpec, fields: dict[str, Any], *, timestamp: str | None = None,
                nonce: str | None = None) -> tuple[dict[str, str], bytes]:
    """Query and body of a push exactly as WeChat sends it in the app's mode and format."""
    timestamp = timestamp or str(int(time.time()))
    nonce = nonce or str(secrets.randbelow(10**10))
    query = {"signature": sha1_sign(spec.token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
    plain = render(fields, spec.format)
    if spec.mode == "plaintext":
        return query, plain
    encrypt = PrpCrypto(base64.b64decode(spec.aes_key + "=")).encrypt(plain, spec.appid).decode()
    envelope: dict[str, Any] = {"ToUserName": spec.original_id, "Encrypt": encrypt}
    if spec.mode == "compatible":
        envelope = {**fields, **envelope}
    query |= {"openid": str(fields.get("FromUserName", "")), "encrypt_type": "aes",
              "msg_signature": sha1_sign(spec.token, timestamp, nonce, encrypt)}
    return query, render(envelope, spec.format)


_msg_ids = itertools.count(int(time.time()) * 1000)


class WeChatUser:
    """A citizen in WeChat: each message is pushed to the gateway (signed, encrypted per the app's
    mode), which must answer `success` at once; the replies arrive at the API server."""

    def __init__(self, client: TestClient, server: WeChatAPIServer, spec: AppSpec, openid: str | None = None) -> None:
        self.client, self.server, self.spec = client, server, spec
        self.openid = openid or "o" + secrets.token_urlsafe(20).replace("-", "A").replace("_", "B")[:27]
        self.seen = 0
        self.ack_ms: list[float] = []

    def fields(self, msg_type: str, **extra: Any) -> dict[str, Any]:
        base: dict[str, Any] = {"ToUserName": self.spec.original_id, "FromUserName": self.openid,
                                "CreateTime": int(time.time()), "MsgType": msg_type}
        if msg_type != "event":
            base["MsgId"] = next(_msg_ids)
        return base | extra

    async def push(self, fields: dict[str, Any], times: int = 1) -> None:
        """Deliver one push (`times` > 1: WeChat's retries of the same push)."""
        self.server.user_wrote(self.spec.appid, self.openid)
        query, body = signed_push(self.spec, fields)
        for _ in range(times):
            started = time.perf_counter()
            resp = await self.client.post(f"/wechat/{self.spec.name}", params=query, data=body)
            self.ack_ms.append((time.perf_counter() - started) * 1000)
            assert resp.status == 200, await resp.text()
            assert await resp.text() in ("success", "")

    async def say(self, text: str, times: int = 1) -> str:
        await self.push(self.fields("text", Content=text), times)
        return await self.replies()

    async def replies(self) -> str:
        """Everything the gateway sent this citizen since the last call, once the gateway is idle."""
        await settle(self.client)
        new = self.server.to(self.openid)[self.seen:]
        self.seen += len(new)
        return "\n".join(new)


async def settle(client: TestClient, timeout_s: float = 90.0) -> None:
    """Wait until every accepted message is answered and every due WeChat reply has left."""
    from gateway.app import ROUTER

    sessions = client.server.app[ROUTER].sessions
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        async with sessions() as session:
            received = await session.scalar(
                select(func.count()).select_from(Message).where(Message.direction == "in", Message.status == "received")
            )
            busy = await session.scalar(
                select(func.count()).select_from(OutboxItem).where(
                    or_(OutboxItem.channel.like("wechat:%"), OutboxItem.channel.like("wxmedia:%")),
                    or_(OutboxItem.status == "sending",
                        (OutboxItem.status == "pending") & (OutboxItem.next_attempt_at <= utcnow())),
                )
            )
        if not received and not busy:
            return
    raise TimeoutError(f"gateway still busy after {timeout_s}s")


KEY_A = "A" * 43  # the official vectors' EncodingAESKey (an AES key of 32 zero bytes)
MINI = AppSpec("mini", "wxba5fad812f8e6fb9", "AAAAA", KEY_A, "secure", "json")
MINI_XML = AppSpec("minixml", "wx0123456789abcdef", "Tok3nMiniXml", "", "plaintext", "xml")
OFFICIAL = AppSpec("oa", "wx134c8103faa5a59e", "Tok3nOA", "", "plaintext", "xml", kind="official")
COMPAT = AppSpec("compat", "wx2c2769f8efd9abc2", "spamtest", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                 "compatible", "xml", kind="official")
V1_PLAIN = AppSpec("v1plain", "wxba5fad812f8e6fb9", "AAAAA", "", "plaintext", "json")
WRONG_KEY = AppSpec("wrongkey", "wxba5fad812f8e6fb9", "AAAAA", "B" * 43, "secure", "json")
TEST_APPS = (MINI, MINI_XML, OFFICIAL, COMPAT, V1_PLAIN, WRONG_KEY)


def apps_setting(apps: tuple[AppSpec, ...] = TEST_APPS) -> str:
    return json.dumps([a.config() for a in apps])


def api_server(apps: tuple[AppSpec, ...] = TEST_APPS) -> WeChatAPIServer:
    return WeChatAPIServer({a.appid: a.secret for a in apps})
