"""What an agent does with a held chat beyond talking (transfer, the work order, the phone, quick
replies), and the supervisor's view: the console's routes, kept apart so each file stays readable."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.text import knowledge_match, normalize
from gateway import supervisor
from gateway.bot_client import RasaClient, bot_sender
from gateway.http import json_error
from gateway.metrics import Metrics
from gateway.waiting import Waiting, contact_phone
from handoff import agents
from handoff.agents import Agent
from handoff.workorders import IntakeError, create_from_intake
from profiles import Profile, citizen_text
from profiles import available as available_profiles
from profiles import load as load_profile
from storage.conversations import Conversation

ECHARTS = Path(__file__).resolve().parent.parent / "node_modules" / "echarts" / "dist" / "echarts.min.js"
TRANSFERRED_TEXT = "正在为您转接其他人工客服，请稍候。"
FACT_SLOTS = ("category", "content", "place", "event_time", "name", "phone")


class DeskActions:
    """Mixed into Console, which provides these."""

    _bot: RasaClient | None
    _metrics: Metrics
    sessions: async_sessionmaker[AsyncSession]
    waiting: Waiting

    async def _agent(self, request: web.Request, *, write: bool = False) -> Agent: ...
    async def _json(self, request: web.Request) -> dict[str, Any]: ...
    def _conversation_id(self, request: web.Request) -> int: ...
    async def _say(self, conv: Conversation, text: str, author: dict[str, Any]) -> None: ...
    async def queue_changed(self) -> None: ...

    async def transfer(self, request: web.Request) -> web.Response:
        """To another agent (by name) or back to the queue ("queue"); only by the one who holds it."""
        agent = await self._agent(request, write=True)
        to = (await self._json(request)).get("to")
        if not isinstance(to, str) or not to.strip():
            return json_error(400, 'to must be an agent\'s name or "queue"')
        conv = await agents.transfer(self.sessions, agent, self._conversation_id(request), to.strip(), self.waiting.clock())
        if isinstance(conv, str):
            return json_error(409, conv)
        await self.queue_changed()
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
        match for ?q= first: ranked as the bot picks its answer (a keyword, then the closest phrasing),
        the entries without a keyword after, by phrasing alone."""
        await self._agent(request)
        query = normalize(request.query.get("q", ""))
        entries = _knowledge(self._profile(request))

        def fit(e: dict[str, Any]) -> tuple[bool, float]:
            hits, score = knowledge_match(query, e["keywords"], e["phrasings"])
            return hits > 0, score

        scored = sorted(entries, key=fit, reverse=True) if query else entries
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

    async def echarts(self, request: web.Request) -> web.StreamResponse:
        """The supervisor view's chart library, installed from npm (`npm ci`), served from here: no CDN."""
        await self._agent(request)
        if not ECHARTS.is_file():
            return json_error(404, "echarts is not installed: run `npm ci` (scripts/bootstrap.sh does)")
        return web.FileResponse(ECHARTS, headers={"Cache-Control": "max-age=86400"})


def _knowledge(profile: Profile) -> list[dict[str, Any]]:
    """The profile's knowledge-base entries (read once per file)."""
    if profile.knowledge_base is None:
        return []
    return _read_knowledge(str(profile.knowledge_base))


@functools.cache
def _read_knowledge(path: str) -> list[dict[str, Any]]:
    entries = yaml.safe_load(Path(path).read_text(encoding="utf-8")).get("entries") or []
    return [{"id": e["id"], "question": e["question"], "answer": citizen_text(str(e["answer"])),
             "keywords": tuple(str(k) for k in e.get("keywords") or ()),
             "phrasings": (str(e["question"]), *(str(p) for p in e.get("patterns") or ()))} for e in entries]
