"""The agents' console: login, the queue, claiming a conversation, talking to the citizen, handing it back.

GET  /console/ (page; redirects to /console/login without a session)
GET  /console/ws (live: citizen messages for the holder, {"type": "queue"} to everyone when the queue changes)
POST /console/api/login {"name","password"} → {"name","role","csrf"} (401 wrong, 429 locked out)
GET  /console/api/me · GET /console/api/queue · GET /console/api/conversations/{id} (audited read)
POST /console/api/conversations/{id}/claim (200 also when already yours; 409 "已被…接入") · …/messages {"text"}
     · …/release (back to the bot) · …/close · …/transfer {"to": name | "queue"}
     · …/work-order {"kind","facts","urgent"} → {"number"} · …/phone (the full number; audited)
GET  /console/api/quick-replies?q= (the profile's knowledge base) · /console/api/supervisor (supervisors)
Writes need the session's CSRF token in X-CSRF-Token; the cookie is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from aiohttp_session import get_session, new_session
from aiohttp_session import setup as setup_sessions
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.messages import Reply
from common.text import mask_phone
from gateway.bot_client import BotUnavailable, RasaClient, bot_sender
from gateway.console_desk import FACT_SLOTS, DeskActions
from gateway.http import json_error, load_json, read_limited
from gateway.metrics import Metrics
from gateway.router import Notify
from gateway.waiting import Waiting, contact_phone
from handoff import agents
from handoff.agents import Agent
from profiles import available as available_profiles
from storage.base import utcnow
from storage.conversations import Conversation, Message
from storage.outbox import Allowance, enqueue

log = logging.getLogger(__name__)
AllowanceOf = Callable[[str, str], Awaitable[Allowance | None]]  # (channel, sender id) → what is left
STATIC = Path(__file__).resolve().parent / "console_static"
COOKIE = "hotline_console"
RELEASED_TEXT = "人工客服已结束本次服务，智能客服继续为您服务。"
CLOSED_TEXT = "人工客服已结束本次对话，感谢您的来电。如有新的问题，请直接留言。"
CLAIMED_TEXT = "人工客服已接入，请直接说明您的问题。"
MAX_TEXT = 2000
FANOUT = "hotline:console"  # Redis pub/sub channel: console frames to the replicas holding the agents' sockets
QUEUE_CHANGED = {"type": "queue"}  # the page reads GET /console/api/queue again


def session_key(secret: str) -> bytes:
    """The cookie's key (32 bytes for Fernet) from the configured secret; every replica given the same secret reads the same cookies."""
    return hashlib.sha256(secret.encode()).digest() if secret else secrets.token_bytes(32)


class Console(DeskActions):
    """Routes and the in-process fan-out of citizen messages to the agents' open consoles."""

    def __init__(self, max_body: int, trusted_proxies: str = "", seen_s: float = 30.0) -> None:
        """`seen_s`: how often an open socket marks its agent online (agents.ONLINE_WITHIN is 90 s)."""
        self.max_body, self.seen_s = max_body, seen_s
        self._trusted = [ipaddress.ip_network(p.strip(), strict=False) for p in trusted_proxies.split(",") if p.strip()]
        self._waiting: Waiting | None = None
        self._metrics = Metrics()
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._bot: RasaClient | None = None
        self._notify: Notify | None = None
        self._outbox_channels: set[str] = set()
        self._wake = lambda: None
        self._sockets: dict[int, weakref.WeakSet[web.WebSocketResponse]] = {}
        self._redis: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._allowance_of: AllowanceOf | None = None

    def start(self, sessions: async_sessionmaker[AsyncSession], bot: RasaClient, notify: Notify,
              outbox_channels: set[str], wake: Any, waiting: Waiting, metrics: Metrics,
              allowance: AllowanceOf | None = None) -> None:
        """`allowance`: what a provider will still take for a citizen (WeChat's quota), from the app."""
        self._sessions, self._bot, self._notify = sessions, bot, notify
        self._allowance_of = allowance
        self._outbox_channels, self._wake = outbox_channels, wake
        self._waiting, self._metrics = waiting, metrics
        waiting.say, waiting.changed = self.say_as_hotline, self.queue_changed

    async def fan_out_through(self, redis_url: str | None) -> None:
        """With Redis, a citizen's message taken in by one replica reaches the agent's console on any
        replica, and an agent's line the citizen's page on any replica (pub/sub: live delivery only;
        the transcript and the REST answer are the record). Without, in process."""
        if redis_url:
            self._redis = aioredis.from_url(redis_url)
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(FANOUT)
            self._listener = asyncio.create_task(self._listen(pubsub))

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._redis is not None:
            await self._redis.aclose()

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        while True:
            try:
                async for message in pubsub.listen():
                    data = json.loads(message["data"])
                    if "push" in data:  # an agent's line for a citizen whose page may be open here
                        push = data["push"]
                        await self._push_here(push["channel"], push["sender_id"], push["text"], int(push["message_id"]))
                    else:
                        agent_id = data["agent_id"]
                        await self._deliver(None if agent_id is None else int(agent_id), data["frame"])
            except (aioredis.RedisError, OSError, ValueError, KeyError) as exc:
                log.warning("console fan-out: %s; listening again", type(exc).__name__)
                await asyncio.sleep(1)

    async def _deliver(self, agent_id: int | None, frame: dict[str, Any]) -> None:
        """To one agent's open sockets on this replica, or (None) to every agent's."""
        targets = [self._sockets.get(agent_id, ())] if agent_id is not None else list(self._sockets.values())
        for ws in [ws for group in targets for ws in list(group)]:
            if not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):  # a socket closing meanwhile
                    await ws.send_json(frame)

    async def _publish(self, agent_id: int | None, frame: dict[str, Any]) -> None:
        """A frame for the agent's (None: every agent's) consoles on whichever replica holds them."""
        if self._redis is None:
            await self._deliver(agent_id, frame)
            return
        try:
            await self._redis.publish(FANOUT, json.dumps({"agent_id": agent_id, "frame": frame}))
        except (aioredis.RedisError, OSError) as exc:  # live delivery only: the page re-reads on reconnect
            log.warning("console fan-out failed: %s", type(exc).__name__)

    async def queue_changed(self) -> None:
        """A conversation joined or left the queue (or changed hands): every console re-reads it at
        once, instead of polling."""
        await self._publish(None, QUEUE_CHANGED)

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        assert self._sessions is not None, "the console is used before the app started it"
        return self._sessions

    @property
    def waiting(self) -> Waiting:
        assert self._waiting is not None, "the console is used before the app started it"
        return self._waiting

    def client_address(self, request: web.Request) -> str:
        """Who is logging in, for the lockout. Behind a trusted proxy, the nearest untrusted address
        in X-Forwarded-For (walked from the right: the proxies append); otherwise the peer itself,
        since anyone can send the header."""
        peer = request.remote or ""
        hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
        address = peer
        while self._is_trusted(address) and hops:
            address = hops.pop()
        return address[:64]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    # -- the citizen side ---------------------------------------------------------------------

    async def citizen_wrote(self, conv: Conversation, inbound: Message) -> None:
        """The router's hook: a message in a conversation a person holds goes to that person's console."""
        frame = {"type": "message", "conversation_id": conv.id, "author": "citizen", "text": inbound.text,
                 "at": inbound.created_at.isoformat() if inbound.created_at else utcnow().isoformat()}
        await self._publish(conv.agent_id or 0, frame)  # stored already: the console reads it on refresh

    async def say_as_hotline(self, conv: Conversation, text: str) -> None:
        """A notice outside any turn (the queue sweep's callback order)."""
        await self._say(conv, text, {"author": "bot"})

    async def _say(self, conv: Conversation, text: str, author: dict[str, Any]) -> None:
        """To the citizen through the reply path the bot's answers take: the open page at once (else
        with the next REST answer), WeChat and SMS through their outbox senders."""
        via_outbox = conv.channel in self._outbox_channels
        async with self.sessions() as session:
            out_id = await session.scalar(insert(Message).returning(Message.id).values(
                conversation_id=conv.id, direction="out", text=text, payload=author,
                status="outbox" if via_outbox else "queued"))
            if via_outbox:
                enqueue(session, channel=conv.channel, recipient=conv.sender_id, body={"text": text, "buttons": []},
                        dedupe_key=f"message:{out_id}", conversation_id=conv.id, message_id=out_id)
            await session.commit()
        if via_outbox:
            self._wake()
        elif not await self._push_here(conv.channel, conv.sender_id, text, out_id) and self._redis is not None:
            push = {"channel": conv.channel, "sender_id": conv.sender_id, "text": text, "message_id": out_id}
            try:  # the citizen's page may be open on another replica; if on none, the next REST answer has it
                await self._redis.publish(FANOUT, json.dumps({"push": push}))
            except (aioredis.RedisError, OSError) as exc:
                log.warning("conversation %s: agent message fan-out failed: %s", conv.id, type(exc).__name__)

    async def _push_here(self, channel: str, sender_id: str, text: str, out_id: int) -> bool:
        """To the citizen's page if it is open on this replica; then the message is delivered."""
        if self._notify is None or not await self._notify(channel, sender_id, [Reply(text)]):
            return False
        async with self.sessions() as session:
            await session.execute(update(Message).where(Message.id == out_id, Message.status == "queued")
                                  .values(status="delivered"))
            await session.commit()
        return True

    async def _tell_bot(self, conv: Conversation, event: str) -> None:
        """Rasa's tracker says who answered (paused while a person holds it); a bot outage must not
        stop an agent, so it is logged and the gateway's own state still decides who answers."""
        assert self._bot is not None
        try:
            await self._bot.tracker_event(bot_sender(conv), {"event": event})
        except BotUnavailable as exc:
            log.warning("conversation %s: could not tell the bot %s: %s", conv.id, event, exc)

    # -- auth ---------------------------------------------------------------------------------

    async def _agent(self, request: web.Request, *, write: bool = False) -> Agent:
        session = await get_session(request)
        agent_id = session.get("agent_id")
        agent = await agents.get(self.sessions, agent_id) if isinstance(agent_id, int) else None
        if agent is None:
            raise web.HTTPUnauthorized(text='{"error": "login required"}', content_type="application/json")
        if write and not hmac.compare_digest(str(session.get("csrf", "")), request.headers.get("X-CSRF-Token", "")):
            raise web.HTTPForbidden(text='{"error": "bad or missing CSRF token"}', content_type="application/json")
        await agents.seen(self.sessions, agent, self.waiting.clock())
        return agent

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            data = load_json(await read_limited(request, self.max_body))
        except ValueError as exc:  # BadJson too: deep nesting, lone surrogates
            raise web.HTTPBadRequest(text='{"error": "body must be JSON"}', content_type="application/json") from exc
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}', content_type="application/json")
        return data

    async def login(self, request: web.Request) -> web.Response:
        data = await self._json(request)
        name, password = data.get("name"), data.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            return json_error(400, "name and password are required strings")
        agent = await agents.login(self.sessions, name, password, self.client_address(request))
        if agent is None:
            return json_error(401, "用户名或密码错误，或尝试次数过多，请稍后再试")
        session = await new_session(request)  # a fresh session id: no fixation
        session["agent_id"], session["csrf"] = agent.id, secrets.token_urlsafe(32)
        return web.json_response(_whoami(agent, session["csrf"]))

    async def logout(self, request: web.Request) -> web.Response:
        agent = await self._agent(request, write=True)
        async with self.sessions() as s:
            agents.audit(s, agent, "logout")
            await s.commit()
        await agents.gone(self.sessions, agent)
        (await get_session(request)).invalidate()
        return web.json_response({"ok": True})

    async def me(self, request: web.Request) -> web.Response:
        agent = await self._agent(request)
        session = await get_session(request)
        return web.json_response(_whoami(agent, session["csrf"]))

    # -- queue and conversations --------------------------------------------------------------

    async def queue(self, request: web.Request) -> web.Response:
        await self._agent(request)
        assert self._bot is not None
        convs = await agents.waiting(self.sessions)
        slots = await asyncio.gather(*(self._bot.slots(bot_sender(c)) for c in convs))
        now = utcnow()
        rows = []
        for conv, facts in zip(convs, slots, strict=True):
            since = conv.waiting_since or conv.updated_at
            rows.append({
                "conversation_id": conv.id, "channel": conv.channel,
                "waited_s": round((now - since).total_seconds()), "urgent": bool(facts.get("urgent")),
                "category": facts.get("category"), "summary": (facts.get("content") or "")[:80],
                "facts": _shown_facts(facts),
            })
        rows.sort(key=lambda r: (not r["urgent"], -r["waited_s"]))  # urgent first, then longest waiting
        return web.json_response({"waiting": rows})

    def _conversation_id(self, request: web.Request) -> int:
        try:
            return int(request.match_info["id"])
        except ValueError as exc:
            raise web.HTTPNotFound() from exc

    async def conversation(self, request: web.Request) -> web.Response:
        """The whole transcript (citizen, bot, agent) and the facts; a full read, so it is audited."""
        agent = await self._agent(request)
        conv_id = self._conversation_id(request)
        async with self.sessions() as session:
            conv = await session.get(Conversation, conv_id)
            if conv is None:
                return json_error(404, "no such conversation")
            rows = (await session.scalars(select(Message).where(Message.conversation_id == conv_id)
                                          .order_by(Message.id))).all()
            agents.audit(session, agent, "read", conversation_id=conv_id)
            await session.commit()
        assert self._bot is not None
        slots = await self._bot.slots(bot_sender(conv))
        facts = {**slots, "phone": contact_phone(conv, slots)}
        messages = [{"author": _author(m), "text": m.text, "at": m.created_at.isoformat()} for m in rows]
        return web.json_response({"conversation_id": conv.id, "channel": conv.channel, "state": conv.state,
                                  "yours": conv.state == "with_agent" and conv.agent_id == agent.id,
                                  "facts": _shown_facts(facts), "messages": messages})

    async def claim(self, request: web.Request) -> web.Response:
        agent = await self._agent(request, write=True)
        conv_id = self._conversation_id(request)
        outcome = await agents.claim(self.sessions, agent, conv_id)
        if not outcome.won:
            if outcome.holder:
                return json_error(409, f"已被{outcome.holder}接入")
            return json_error(409, "该对话不在等待队列中")
        if outcome.state is None:  # newly won, not already held: pause the bot and greet the citizen
            await self.queue_changed()
            if outcome.waited_s is not None:
                self._metrics.wait_seconds.observe(outcome.waited_s)
            conv = await agents.held(self.sessions, agent, conv_id)
            if conv is not None:
                await self._tell_bot(conv, "pause")
                await self._say(conv, CLAIMED_TEXT, {"author": "agent", "agent": agent.name})
        return web.json_response({"conversation_id": conv_id, "agent": agent.name})

    async def message(self, request: web.Request) -> web.Response:
        agent = await self._agent(request, write=True)
        text = (await self._json(request)).get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            return json_error(400, f"text must be 1-{MAX_TEXT} characters")
        conv = await agents.held(self.sessions, agent, self._conversation_id(request))
        if conv is None:
            return json_error(409, "您未接入该对话")
        await self._say(conv, text.strip(), {"author": "agent", "agent": agent.name})
        async with self.sessions() as session:
            agents.audit(session, agent, "message", conversation_id=conv.id)
            await session.commit()
        return web.json_response({"ok": True, "allowance": await self._allowance(conv)})

    async def allowance(self, request: web.Request) -> web.Response:
        """What the provider still takes for this citizen (null: no such limit)."""
        await self._agent(request)
        async with self.sessions() as session:
            conv = await session.get(Conversation, self._conversation_id(request))
        if conv is None:
            return json_error(404, "no such conversation")
        return web.json_response({"allowance": await self._allowance(conv)})

    async def _allowance(self, conv: Conversation) -> dict[str, Any] | None:
        """WeChat's customer-service quota left, and what becomes of a message beyond it: the
        profile's fallback (`sms` to the order's phone, `marker`: shown when the citizen next writes)."""
        left = await self._allowance_of(conv.channel, conv.sender_id) if self._allowance_of else None
        if left is None:
            return None
        return {"left": left.left, "until": left.until.isoformat() if left.until else None,
                "after": list(self.waiting.profile_of(conv).undeliverable_fallback)}

    async def _finish(self, request: web.Request, action: str, text: str) -> web.Response:
        agent = await self._agent(request, write=True)
        conv, handled_s = await agents.finish(self.sessions, agent, self._conversation_id(request), action)
        if conv is None:
            return json_error(409, "您未接入该对话")
        if handled_s is not None:
            self._metrics.handle_seconds.observe(handled_s)
        await self.queue_changed()
        await self._tell_bot(conv, "resume")
        await self._say(conv, text, {"author": "agent", "agent": agent.name})
        return web.json_response({"ok": True})

    async def release(self, request: web.Request) -> web.Response:
        return await self._finish(request, "release", RELEASED_TEXT)

    async def close(self, request: web.Request) -> web.Response:
        return await self._finish(request, "close", CLOSED_TEXT)

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        """Live citizen messages. A browser sends the cookie on any site's WebSocket, so the Origin
        must be this console's own."""
        agent = await self._agent(request)
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(text="cross-origin console socket")
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4096)
        await ws.prepare(request)
        self._sockets.setdefault(agent.id, weakref.WeakSet()).add(ws)
        try:
            while True:
                try:
                    frame = await ws.receive(timeout=self.seen_s)
                except TimeoutError:  # the page no longer polls: the open socket says the agent is here
                    current = await agents.get(self.sessions, agent.id)
                    if current is None:  # disabled meanwhile
                        await ws.close()
                        break
                    await agents.seen(self.sessions, current, self.waiting.clock())
                    continue
                if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        finally:
            self._sockets.get(agent.id, weakref.WeakSet()).discard(ws)
        return ws

    async def page(self, request: web.Request) -> web.StreamResponse:
        session = await get_session(request)
        if request.path != "/console/login" and "agent_id" not in session:
            raise web.HTTPFound("/console/login")
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    def add_routes(self, app: web.Application, secret: str, secure_cookie: bool) -> None:
        setup_sessions(app, EncryptedCookieStorage(session_key(secret), cookie_name=COOKIE, httponly=True,
                                                   samesite="Strict", secure=secure_cookie, max_age=12 * 3600))
        app.router.add_get("/console/", self.page)
        app.router.add_get("/console/login", self.page)
        app.router.add_get("/console/ws", self.websocket)
        app.router.add_post("/console/api/login", self.login)
        app.router.add_post("/console/api/logout", self.logout)
        app.router.add_get("/console/api/me", self.me)
        app.router.add_get("/console/api/queue", self.queue)
        app.router.add_get("/console/api/conversations/{id}", self.conversation)
        app.router.add_get("/console/api/conversations/{id}/allowance", self.allowance)
        app.router.add_get("/console/api/quick-replies", self.quick_replies)
        app.router.add_get("/console/api/supervisor", self.stats)
        app.router.add_get("/console/echarts.min.js", self.echarts)
        actions = {"claim": self.claim, "messages": self.message, "release": self.release, "close": self.close,
                   "transfer": self.transfer, "work-order": self.work_order, "phone": self.phone}
        for action, handler in actions.items():
            app.router.add_post(f"/console/api/conversations/{{id}}/{action}", handler)


def _whoami(agent: Agent, csrf: str) -> dict[str, Any]:
    """Who is logged in; a supervisor's view can show any of the profiles."""
    return {"name": agent.name, "role": agent.role, "csrf": csrf,
            "profiles": available_profiles() if agent.role == "supervisor" else []}


def _author(m: Message) -> str:
    if m.direction == "in":
        return "citizen"
    return "agent" if (m.payload or {}).get("author") == "agent" else "bot"


def _shown_facts(slots: dict[str, Any]) -> dict[str, Any]:
    """The facts the bot collected, phone masked: revealing it is a separate, audited act."""
    facts = {k: slots.get(k) for k in FACT_SLOTS if slots.get(k) not in (None, "")}
    if "phone" in facts:
        facts["phone"] = mask_phone(str(facts["phone"]))
    return facts

