"""The agents' console: login, the queue, claiming a conversation, talking to the citizen, handing it back.

GET  /console/ (page; redirects to /console/login without a session) · GET /console/ws (live citizen messages)
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
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import weakref
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import yaml
from aiohttp import WSMsgType, web
from aiohttp_session import get_session, new_session
from aiohttp_session import setup as setup_sessions
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.messages import Reply
from common.text import mask_phone
from gateway import supervisor
from gateway.bot_client import BotUnavailable, RasaClient, bot_sender
from gateway.http import json_error, read_limited
from gateway.metrics import Metrics
from gateway.router import Notify
from gateway.waiting import Waiting, contact_phone
from handoff import agents
from handoff.agents import Agent
from handoff.workorders import IntakeError, create_from_intake
from profiles import Profile, citizen_text
from profiles import available as available_profiles
from profiles import load as load_profile
from storage.base import utcnow
from storage.conversations import Conversation, Message
from storage.outbox import enqueue

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "console_static"
ECHARTS = Path(__file__).resolve().parent.parent / "node_modules" / "echarts" / "dist" / "echarts.min.js"
COOKIE = "hotline_console"
RELEASED_TEXT = "人工客服已结束本次服务，智能客服继续为您服务。"
CLOSED_TEXT = "人工客服已结束本次对话，感谢您的来电。如有新的问题，请直接留言。"
CLAIMED_TEXT = "人工客服已接入，请直接说明您的问题。"
TRANSFERRED_TEXT = "正在为您转接其他人工客服，请稍候。"
FACT_SLOTS = ("category", "content", "place", "event_time", "name", "phone")
MAX_TEXT = 2000
FANOUT = "hotline:console"  # Redis pub/sub channel: citizen messages to the replica holding the agent's socket


def session_key(secret: str) -> bytes:
    """The cookie's key (32 bytes for Fernet) from the configured secret; every replica given the same secret reads the same cookies."""
    return hashlib.sha256(secret.encode()).digest() if secret else secrets.token_bytes(32)


class Console:
    """Routes and the in-process fan-out of citizen messages to the agents' open consoles."""

    def __init__(self, max_body: int, trusted_proxies: str = "") -> None:
        self.max_body = max_body
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

    def start(self, sessions: async_sessionmaker[AsyncSession], bot: RasaClient, notify: Notify,
              outbox_channels: set[str], wake: Any, waiting: Waiting, metrics: Metrics) -> None:
        self._sessions, self._bot, self._notify = sessions, bot, notify
        self._outbox_channels, self._wake = outbox_channels, wake
        self._waiting, self._metrics = waiting, metrics
        waiting.say = self.say_as_hotline

    async def fan_out_through(self, redis_url: str | None) -> None:
        """With Redis, a citizen's message taken in by one replica reaches the agent's console on any
        replica (pub/sub: live delivery only; the transcript read is the record). Without, in process."""
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
                    await self._deliver(int(data["agent_id"]), data["frame"])
            except (aioredis.RedisError, OSError, ValueError, KeyError) as exc:
                log.warning("console fan-out: %s; listening again", type(exc).__name__)
                await asyncio.sleep(1)

    async def _deliver(self, agent_id: int, frame: dict[str, Any]) -> None:
        for ws in list(self._sockets.get(agent_id, ())):
            if not ws.closed:
                await ws.send_json(frame)

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
        if self._redis is None:
            await self._deliver(conv.agent_id or 0, frame)
            return
        try:
            await self._redis.publish(FANOUT, json.dumps({"agent_id": conv.agent_id or 0, "frame": frame}))
        except (aioredis.RedisError, OSError) as exc:  # the message is stored; the console reads it on refresh
            log.warning("conversation %s: console fan-out failed: %s", conv.id, type(exc).__name__)

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
        elif self._notify is not None and await self._notify(conv.channel, conv.sender_id, [Reply(text)]):
            async with self.sessions() as session:
                await session.execute(update(Message).where(Message.id == out_id, Message.status == "queued")
                                      .values(status="delivered"))
                await session.commit()

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
            data = json.loads(await read_limited(request, self.max_body))
        except ValueError as exc:
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
        return web.json_response({"name": agent.name, "role": agent.role, "csrf": session["csrf"]})

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
        return web.json_response({"name": agent.name, "role": agent.role, "csrf": session["csrf"]})

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
        return web.json_response({"ok": True})

    async def _finish(self, request: web.Request, action: str, text: str) -> web.Response:
        agent = await self._agent(request, write=True)
        conv, handled_s = await agents.finish(self.sessions, agent, self._conversation_id(request), action)
        if conv is None:
            return json_error(409, "您未接入该对话")
        if handled_s is not None:
            self._metrics.handle_seconds.observe(handled_s)
        await self._tell_bot(conv, "resume")
        await self._say(conv, text, {"author": "agent", "agent": agent.name})
        return web.json_response({"ok": True})

    async def release(self, request: web.Request) -> web.Response:
        return await self._finish(request, "release", RELEASED_TEXT)

    async def close(self, request: web.Request) -> web.Response:
        return await self._finish(request, "close", CLOSED_TEXT)

    async def transfer(self, request: web.Request) -> web.Response:
        """To another agent (by name) or back to the queue ("queue"); only by the one who holds it."""
        agent = await self._agent(request, write=True)
        to = (await self._json(request)).get("to")
        if not isinstance(to, str) or not to.strip():
            return json_error(400, 'to must be an agent\'s name or "queue"')
        conv = await agents.transfer(self.sessions, agent, self._conversation_id(request), to.strip(), self.waiting.clock())
        if isinstance(conv, str):
            return json_error(409, conv)
        if conv.state == "waiting":
            await self._say(conv, await self.waiting.place_text(conv), {"author": "bot"})
        else:
            await self._say(conv, TRANSFERRED_TEXT, {"author": "agent", "agent": agent.name})
        return web.json_response({"ok": True, "state": conv.state})

    async def work_order(self, request: web.Request) -> web.Response:
        """The agent files the order from the facts, edited: the bot's own idempotent creation, keyed
        by the bot's intake id when it had one, else by this hold (a second click returns the same)."""
        agent = await self._agent(request, write=True)
        data = await self._json(request)
        conv = await agents.held(self.sessions, agent, self._conversation_id(request))
        if conv is None:
            return json_error(409, "您未接入该对话")
        assert self._bot is not None
        slots = await self._bot.slots(bot_sender(conv))
        edited = data.get("facts") if isinstance(data.get("facts"), dict) else {}
        facts = {k: str(v) for k, v in edited.items() if k in FACT_SLOTS and v not in (None, "")}
        if "*" in facts.get("phone", "*"):  # the masked number shown: keep the one the bot collected
            facts["phone"] = contact_phone(conv, slots)
        hold = await agents.current_hold(self.sessions, conv.id)
        intake: dict[str, Any] = {
            **{k: slots.get(k) for k in ("urgent_rule", "confidential", "anonymous", "id_number")},
            **facts,
            "intake_id": f"agent-{conv.id}-{hold}",
            "category": data.get("kind") or facts.get("category") or slots.get("category"),
            "urgent": bool(data.get("urgent", slots.get("urgent"))),
        }
        profile = self.waiting.profile_of(conv)
        try:
            receipt = await create_from_intake(self.sessions, intake, profile,  # type: ignore[arg-type]
                                               channel=conv.channel, conversation_id=conv.id, now=self.waiting.clock())
        except IntakeError:
            return json_error(400, f"kind must be one of {', '.join(profile.categories)}")
        async with self.sessions() as session:
            agents.audit(session, agent, "work_order", conversation_id=conv.id,
                         detail={"number": receipt.number, "outcome": receipt.outcome})
            await session.commit()
        self._metrics.work_orders.labels(profile.id, str(intake["category"]), receipt.outcome).inc()
        await self._say(conv, receipt.citizen_text(), {"author": "agent", "agent": agent.name})
        return web.json_response({"number": receipt.number, "outcome": receipt.outcome})

    async def phone(self, request: web.Request) -> web.Response:
        """The full phone number, for the agent holding the chat or a supervisor; audited first."""
        agent = await self._agent(request, write=True)
        conv_id = self._conversation_id(request)
        conv = await agents.held(self.sessions, agent, conv_id)
        if conv is None and agent.role == "supervisor":
            async with self.sessions() as session:
                conv = await session.get(Conversation, conv_id)
        if conv is None:
            return json_error(409, "您未接入该对话")
        assert self._bot is not None
        number = contact_phone(conv, await self._bot.slots(bot_sender(conv)))
        await agents.reveal(self.sessions, agent, conv_id)
        return web.json_response({"phone": number})

    async def quick_replies(self, request: web.Request) -> web.Response:
        """Answers from the profile's knowledge base (枝江 第十六条: the knowledge base first), best
        match for ?q= first."""
        await self._agent(request)
        query = request.query.get("q", "")
        entries = _knowledge(self._profile(request))
        scored = sorted(entries, key=lambda e: -sum(k in query for k in e["keywords"])) if query else entries
        return web.json_response({"replies": [{k: e[k] for k in ("id", "question", "answer")} for e in scored[:20]]})

    async def stats(self, request: web.Request) -> web.Response:
        agent = await self._agent(request)
        if agent.role != "supervisor":
            return json_error(403, "仅值班长可查看")
        return web.json_response(await supervisor.overview(self.sessions, self.waiting, self._profile(request)))

    def _profile(self, request: web.Request) -> Profile:
        """?profile= names one of the profiles; else the one this gateway serves."""
        name = request.query.get("profile")
        return load_profile(name) if name in available_profiles() else self.waiting.default_profile

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
            async for frame in ws:
                if frame.type == WSMsgType.ERROR:
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
        app.router.add_get("/console/api/quick-replies", self.quick_replies)
        app.router.add_get("/console/api/supervisor", self.stats)
        app.router.add_get("/console/echarts.min.js", self.echarts)
        actions = {"claim": self.claim, "messages": self.message, "release": self.release, "close": self.close,
                   "transfer": self.transfer, "work-order": self.work_order, "phone": self.phone}
        for action, handler in actions.items():
            app.router.add_post(f"/console/api/conversations/{{id}}/{action}", handler)

    async def echarts(self, request: web.Request) -> web.StreamResponse:
        """The supervisor view's chart library, installed from npm (`npm ci`), served from here: no CDN."""
        await self._agent(request)
        if not ECHARTS.is_file():
            return json_error(404, "echarts is not installed: run `npm ci` (scripts/bootstrap.sh does)")
        return web.FileResponse(ECHARTS, headers={"Cache-Control": "max-age=86400"})


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


def _knowledge(profile: Profile) -> list[dict[str, Any]]:
    """The profile's knowledge-base entries (read once per file)."""
    if profile.knowledge_base is None:
        return []
    return _read_knowledge(str(profile.knowledge_base))


@functools.cache
def _read_knowledge(path: str) -> list[dict[str, Any]]:
    entries = yaml.safe_load(Path(path).read_text(encoding="utf-8")).get("entries") or []
    return [{"id": e["id"], "question": e["question"], "answer": citizen_text(str(e["answer"])),
             "keywords": tuple(str(k) for k in e.get("keywords") or ())} for e in entries]
