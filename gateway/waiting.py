"""Nobody waits forever: the queue for a person, its place and expected wait, the 回拨 (callback)
work order when nobody can answer, and the bot's own reasons to call a person in.

A conversation enters `waiting` when the citizen asks for a person, when the bot failed twice in a
row, or when the citizen is angry or stuck (the same message, the same answer). It leaves it by a
claim, "取消", or a callback order: at once when it is outside the profile's service hours or nobody
is online, later when the wait passes the profile's limit. The sweep that files the late ones runs
on the app's clock (`hotline agents sweep --at`, tests), and also takes conversations that were
already stuck in `waiting` before this existed.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from common.china_time import CHINA_TZ
from common.messages import Reply
from gateway.bot_client import RasaClient, bot_sender
from gateway.config import ROOT
from gateway.metrics import Metrics
from handoff import agents
from handoff.workorders import IntakeError, create_from_intake
from profiles import Profile
from storage.conversations import Conversation, Message
from storage.db import UnitOfWork

log = logging.getLogger(__name__)

QUEUE_TEXT = "您当前排在等待人工客服队列的第{place}位，预计等待约{minutes}分钟。如不想等待，可回复“取消”返回智能客服。"
CALLBACK_TEXT = "{why}，已为您登记回拨工单，工单号：{number}。工作人员将尽快通过{how}与您联系，您和智能客服的对话记录已附在工单中。"
CALLBACK_WHY = {
    "hours": "目前不在人工客服服务时间",
    "nobody": "目前暂无人工客服在线",
    "wait": "人工客服繁忙，您已等待较长时间",
}
TRIGGER_TEXT = "抱歉，智能客服没能帮到您，正在为您转接人工客服。"
# The bot's answers when it did not understand (bot/domain.yml): two in a row means it failed.
FAILED_RESPONSES = ("utter_default", "utter_prompt_request")
LOOP_MIN_CHARS = 4  # a repeated "好" is an answer, not a loop


@cache
def failure_texts() -> frozenset[str]:
    """Read from the bot's domain, so the gateway never keeps a copy of the bot's words."""
    domain = yaml.safe_load((ROOT / "bot" / "domain.yml").read_text(encoding="utf-8"))
    return frozenset(v["text"] for name in FAILED_RESPONSES for v in domain["responses"][name])


def trigger(profile: Profile, text: str, replies: Sequence[Reply], earlier: Sequence[Any]) -> str | None:
    """Why this turn hands the citizen to a person, or None. `earlier`: the conversation's messages
    before this one, newest first (direction, text, reply_to, id)."""
    if any(word in text for word in profile.human_service.anger_words):
        return "angry"
    said = [r.text for r in replies]
    last_in = next((m for m in earlier if m.direction == "in"), None)
    if last_in is None or not said:
        return None
    before = [m.text for m in earlier if m.direction == "out" and m.reply_to == last_in.id][::-1]
    failed = failure_texts()
    if all(t in failed for t in said) and before and all(t in failed for t in before):
        return "bot_failed_twice"
    if len(text.strip()) >= LOOP_MIN_CHARS and last_in.text.strip() == text.strip() and before == said:
        return "loop"
    return None


def contact_phone(conv: Conversation, slots: dict[str, Any]) -> str | None:
    """The number the bot collected; an SMS citizen's is the sender's (the bot never asks them)."""
    return slots.get("phone") or (conv.sender_id if conv.channel == "sms" else None)


@dataclass(frozen=True)
class Callback:
    number: str
    text: str


class Waiting:
    """The queue's rules, shared by the router (entering, waiting) and the console (the sweep)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], transact: UnitOfWork, bot: RasaClient,
                 default_profile: Profile, profile_of: Callable[[Conversation], Profile],
                 clock: Callable[[], dt.datetime], metrics: Metrics) -> None:
        self.sessions, self.transact, self.bot, self.default_profile = sessions, transact, bot, default_profile
        self.profile_of, self.clock, self.metrics = profile_of, clock, metrics
        # Given by the app: says something to a citizen outside a turn (the sweep's callback notice).
        self.say: Callable[[Conversation, str], Awaitable[None]] | None = None
        # Given by the app: tells the agents' consoles that the queue changed (live, on every replica).
        self.changed: Callable[[], Awaitable[None]] | None = None

    async def queue_changed(self) -> None:
        if self.changed is not None:
            await self.changed()

    async def closed_reason(self, profile: Profile, now: dt.datetime) -> str | None:
        """Why no person can take a chat now (hours, nobody online), or None."""
        local = now.astimezone(CHINA_TZ)
        if not profile.human_service.open_at(local.hour * 60 + local.minute):
            return "hours"
        if not (await agents.presence(self.sessions, now)).online:
            return "nobody"
        return None

    async def entered(self, conv: Conversation) -> list[Reply]:
        """Just moved to `waiting`: the place and expected wait, or at once a callback order."""
        reason = await self.closed_reason(self.profile_of(conv), self.clock())
        if reason is not None:
            done = await self.call_back(conv, reason)
            return [Reply(done.text)] if done else []
        return [Reply(await self.place_text(conv))]

    async def place_text(self, conv: Conversation) -> str:
        place = await self._ahead_of(conv) + 1
        return QUEUE_TEXT.format(place=place, minutes=await self.expected_minutes(conv, place))

    async def expected_minutes(self, conv: Conversation, place: int) -> int:
        """Place × today's mean handle time (the profile's estimate before anyone was served) ÷ the
        agents online."""
        now = self.clock()
        midnight = now.astimezone(CHINA_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
        handled = await agents.handle_seconds(self.sessions, midnight)
        per_chat = (sum(handled) / len(handled) / 60) if handled else self.profile_of(conv).human_service.expected_handle_minutes
        online = len((await agents.presence(self.sessions, now)).online) or 1
        return max(1, math.ceil(place * per_chat / online))

    async def _ahead_of(self, conv: Conversation) -> int:
        """How many have waited longer."""
        if conv.waiting_since is None:
            return 0
        async with self.sessions() as session:
            ahead = await session.scalar(select(func.count()).select_from(Conversation).where(
                Conversation.state == "waiting", Conversation.waiting_since < conv.waiting_since))
        return ahead or 0

    async def call_back(self, conv: Conversation, reason: str) -> Callback | None:
        """Take the conversation out of the queue (compare-and-set: a claim meanwhile wins) and file a
        回拨 order with the transcript and the facts the bot collected. None when someone claimed it."""
        since = conv.waiting_since
        async with self.sessions() as session:
            done = await session.execute(
                update(Conversation).where(Conversation.id == conv.id, Conversation.state == "waiting")
                .values(state="bot", waiting_since=None))
            await session.commit()
        if done.rowcount != 1:
            return None
        conv.state, conv.waiting_since = "bot", None
        await self.queue_changed()
        now = self.clock()
        if since is not None:
            self.metrics.wait_seconds.observe(max(0.0, (now - since).total_seconds()))
        profile = self.profile_of(conv)
        facts = await self.bot.slots(bot_sender(conv))
        phone = contact_phone(conv, facts)
        kind = facts.get("category") if facts.get("category") in profile.categories else "help"
        intake: dict[str, Any] = {
            "intake_id": f"callback-{conv.id}-{int(since.timestamp()) if since else 0}",
            "category": kind, "urgent": bool(facts.get("urgent")), "callback": reason,
            "content": facts.get("content") or "市民要求人工服务，未能及时接入，请回拨（见对话记录）。",
            "place": facts.get("place"), "event_time": facts.get("event_time"), "phone": phone,
            "name": facts.get("name"),
        }
        try:
            receipt = await create_from_intake(self.transact, intake, profile,  # type: ignore[arg-type]
                                               channel=conv.channel, conversation_id=conv.id, now=now)
        except IntakeError as exc:
            log.error("conversation %s: callback order not filed: %s", conv.id, exc)
            return None
        self.metrics.work_orders.labels(profile.id, kind, "callback").inc()
        log.info("conversation %s: callback order %s (%s)", conv.id, receipt.number, reason)
        how = "您留下的电话" if phone else "本渠道"
        return Callback(receipt.number, CALLBACK_TEXT.format(why=CALLBACK_WHY[reason], number=receipt.number, how=how))

    async def sweep(self) -> int:
        """Callback orders for everyone who can no longer be served: out of hours, nobody online, or
        waiting longer than the profile allows. Returns how many were filed."""
        now = self.clock()
        async with self.sessions() as session:
            convs = list((await session.scalars(select(Conversation).where(Conversation.state == "waiting")
                                                .order_by(Conversation.waiting_since))).all())
        self.metrics.queue_length.set(len(convs))
        filed = 0
        for conv in convs:
            profile = self.profile_of(conv)
            reason = await self.closed_reason(profile, now)
            since = conv.waiting_since if conv.waiting_since else None
            if reason is None and (since is None or now - since > dt.timedelta(minutes=profile.human_service.max_wait_minutes)):
                reason = "wait"
            if reason is None:
                continue
            done = await self.call_back(conv, reason)
            if done is not None:
                filed += 1
                if self.say is not None:
                    await self.say(conv, done.text)
        if filed:
            self.metrics.queue_length.set(len(convs) - filed)
        return filed

    async def earlier_messages(self, conv: Conversation, inbound: Message) -> list[Any]:
        """The few messages before this one, newest first: what `trigger` compares with. Read through
        the unit of work, as the rest of a turn: on SQLite, aiosqlite's round trips for this one read
        were 9 % of the gateway's busy samples a turn (docs/benchmarks.md, "The gateway's own time")."""
        def work(session: Session) -> list[Any]:
            return list(session.execute(
                select(Message.id, Message.direction, Message.text, Message.reply_to)
                .where(Message.conversation_id == conv.id, Message.id < inbound.id)
                .order_by(Message.id.desc()).limit(8)).all())
        return await self.transact(work)
