"""Human agents: accounts, the audit log, the queue and the claim that hands a conversation to one person.

Who owns a conversation is one field, `conversations.state` (bot | waiting | with_agent), plus
`agent_id`; a claim is a compare-and-set on it (one conditional UPDATE), so two agents on two replicas
clicking at once get exactly one winner, with no lock held between requests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Boolean, ForeignKey, Integer, String, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, utcnow
from storage.conversations import Conversation

ROLES = ("agent", "supervisor")
LOCKOUT_FAILURES = 5  # failed logins per name, or per address, within the window
LOCKOUT_WINDOW = dt.timedelta(minutes=15)
ONLINE_WITHIN = dt.timedelta(seconds=90)  # the console polls every few seconds; a closed tab drops out
SEEN_EVERY = dt.timedelta(seconds=20)  # presence writes at most this often per agent
_HASHER = PasswordHasher()
# Verified when the name is unknown, so an unknown name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("not-a-password")


class Agent(Base):
    """A person at the hotline who answers citizens (agent) or also watches the hotline (supervisor)."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # When this agent's console last called the gateway: online means recently (shared by every replica).
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class AgentAudit(Base):
    """Every agent action (login, failed login, claim, read, message, release, close) and account change.
    `address` is kept for failed logins only (the lockout counts them); nothing a citizen wrote is here."""

    __tablename__ = "agent_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey(Agent.id), default=None)
    agent_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32), index=True)
    conversation_id: Mapped[int | None] = mapped_column(Integer, default=None)
    address: Mapped[str | None] = mapped_column(String(64), default=None)
    detail: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class AgentError(ValueError):
    """A request an operator or agent can correct (unknown name, bad role, name taken)."""


@dataclass(frozen=True)
class Claim:
    """The outcome of a claim: won (also when this agent already held it), or who holds it now."""

    won: bool
    holder: str | None = None
    state: str | None = None
    waited_s: int | None = None  # newly won: how long the citizen waited


def audit(session: AsyncSession, agent: Agent | None, action: str, *, name: str | None = None,
          conversation_id: int | None = None, address: str | None = None,
          detail: dict[str, Any] | None = None) -> None:
    """Add an audit row to the caller's transaction: it exists exactly when the action happened."""
    session.add(AgentAudit(agent_id=agent.id if agent else None, agent_name=agent.name if agent else (name or ""),
                           action=action, conversation_id=conversation_id, address=address, detail=detail))


async def add(sessions: async_sessionmaker[AsyncSession], name: str, password: str, role: str) -> Agent:
    if role not in ROLES:
        raise AgentError(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > 64:
        raise AgentError("name must be 1-64 characters")
    if len(password) < 8:
        raise AgentError("password must be at least 8 characters")
    async with sessions() as session:
        if await session.scalar(select(Agent.id).where(Agent.name == name)) is not None:
            raise AgentError(f"agent {name} exists")
        agent = Agent(name=name, password_hash=_HASHER.hash(password), role=role, active=True)
        session.add(agent)
        await session.flush()
        audit(session, agent, "account_added", detail={"role": role})
        await session.commit()
        return agent


async def listing(sessions: async_sessionmaker[AsyncSession]) -> list[Agent]:
    async with sessions() as session:
        return list((await session.scalars(select(Agent).order_by(Agent.name))).all())


async def disable(sessions: async_sessionmaker[AsyncSession], name: str) -> None:
    async with sessions() as session:
        agent = await session.scalar(select(Agent).where(Agent.name == name))
        if agent is None:
            raise AgentError(f"no agent {name}")
        agent.active = False
        audit(session, agent, "account_disabled")
        await session.commit()


async def login(sessions: async_sessionmaker[AsyncSession], name: str, password: str,
                address: str) -> Agent | None:
    """The agent when the password is right and neither the name nor the address is locked out.
    Failures are counted in the audit log, so the limit holds across replicas and restarts."""
    async with sessions() as session:
        since = utcnow() - LOCKOUT_WINDOW
        failures = select(func.count()).select_from(AgentAudit).where(
            AgentAudit.action == "login_failed", AgentAudit.created_at >= since)
        by_name = await session.scalar(failures.where(AgentAudit.agent_name == name[:64]))
        by_address = await session.scalar(failures.where(AgentAudit.address == address))
        agent = await session.scalar(select(Agent).where(Agent.name == name))
        locked = (by_name or 0) >= LOCKOUT_FAILURES or (by_address or 0) >= LOCKOUT_FAILURES
        try:
            ok = _HASHER.verify(agent.password_hash if agent else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            ok = False
        ok = ok and agent is not None and agent.active and not locked
        if not ok:
            audit(session, None, "login_failed", name=name[:64], address=address,
                  detail={"locked": True} if locked else None)
            await session.commit()
            return None
        assert agent is not None
        agent.last_seen_at = utcnow()
        audit(session, agent, "login")
        await session.commit()
        return agent


async def get(sessions: async_sessionmaker[AsyncSession], agent_id: int) -> Agent | None:
    """The agent behind a session, read each request: a disabled account stops working at once."""
    async with sessions() as session:
        agent = await session.get(Agent, agent_id)
        return agent if agent is not None and agent.active else None


async def waiting(sessions: async_sessionmaker[AsyncSession]) -> list[Conversation]:
    """Conversations waiting for a person, longest waiting first (urgency is applied by the caller,
    which reads the facts the bot collected)."""
    async with sessions() as session:
        rows = await session.scalars(
            select(Conversation).where(Conversation.state == "waiting")
            .order_by(Conversation.waiting_since, Conversation.id))
        return list(rows.all())


async def claim(sessions: async_sessionmaker[AsyncSession], agent: Agent, conversation_id: int) -> Claim:
    """Compare-and-set: waiting → with_agent for this agent. The database decides the winner."""
    async with sessions() as session:
        since = await session.scalar(select(Conversation.waiting_since).where(Conversation.id == conversation_id))
        won = await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id, Conversation.state == "waiting")
            .values(state="with_agent", agent_id=agent.id, updated_at=utcnow())
        )
        if won.rowcount == 1:
            waited = round((utcnow() - since).total_seconds()) if since else None
            audit(session, agent, "claim", conversation_id=conversation_id, detail={"waited_s": waited})
            await session.commit()
            return Claim(True, waited_s=waited)
        await session.rollback()
        row = (await session.execute(
            select(Conversation.state, Agent.id, Agent.name)
            .outerjoin(Agent, Agent.id == Conversation.agent_id)
            .where(Conversation.id == conversation_id)
        )).first()
        if row is None:
            return Claim(False)
        state, holder_id, holder = row
        if state == "with_agent" and holder_id == agent.id:
            return Claim(True, holder, state)
        return Claim(False, holder if state == "with_agent" else None, state)


async def finish(sessions: async_sessionmaker[AsyncSession], agent: Agent, conversation_id: int,
                 action: str) -> tuple[Conversation | None, int | None]:
    """Release (back to the bot) or close: only by the agent who holds it. The conversation (None
    when not held) and how long it was held."""
    async with sessions() as session:
        done = await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id, Conversation.state == "with_agent",
                   Conversation.agent_id == agent.id)
            .values(state="bot", agent_id=None, waiting_since=None, updated_at=utcnow())
        )
        if done.rowcount != 1:
            await session.rollback()
            return None, None
        handled = await _held_for(session, conversation_id)
        audit(session, agent, action, conversation_id=conversation_id, detail={"handled_s": handled})
        await session.commit()
        return await session.get(Conversation, conversation_id), handled


async def held(sessions: async_sessionmaker[AsyncSession], agent: Agent, conversation_id: int) -> Conversation | None:
    """The conversation if this agent holds it now (a fresh read: ownership may have changed)."""
    async with sessions() as session:
        conv = await session.get(Conversation, conversation_id)
        ok = conv is not None and conv.state == "with_agent" and conv.agent_id == agent.id
        return conv if ok else None


_LAST_TAKEN = (select(AgentAudit.id, AgentAudit.created_at)
               .where(AgentAudit.action.in_(("claim", "transfer"))).order_by(AgentAudit.id.desc()).limit(1))


async def _held_for(session: AsyncSession, conversation_id: int) -> int | None:
    """Seconds since the conversation was last claimed or transferred: the handle time."""
    row = (await session.execute(_LAST_TAKEN.where(AgentAudit.conversation_id == conversation_id))).first()
    return round((utcnow() - row.created_at).total_seconds()) if row else None


async def current_hold(sessions: async_sessionmaker[AsyncSession], conversation_id: int) -> int:
    """An id for the present hold of a conversation (its last claim or transfer): one work order per hold."""
    async with sessions() as session:
        row = (await session.execute(_LAST_TAKEN.where(AgentAudit.conversation_id == conversation_id))).first()
        return row.id if row else 0


async def transfer(sessions: async_sessionmaker[AsyncSession], agent: Agent, conversation_id: int,
                   to: str, now: dt.datetime) -> Conversation | str:
    """Hand a held conversation to another active agent (by name) or back to the queue ("queue").
    A compare-and-set on the holder, like a claim. The conversation, or why not (for the agent)."""
    async with sessions() as session:
        target = None
        if to != "queue":
            target = await session.scalar(select(Agent).where(Agent.name == to, Agent.active.is_(True)))
            if target is None:
                return f"没有名为{to}的在岗坐席"
            if target.id == agent.id:
                return "不能转给自己"
        values: dict[str, Any] = (
            {"state": "with_agent", "agent_id": target.id} if target is not None
            else {"state": "waiting", "agent_id": None, "waiting_since": now})
        done = await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id, Conversation.state == "with_agent",
                   Conversation.agent_id == agent.id)
            .values(**values, updated_at=utcnow()))
        if done.rowcount != 1:
            await session.rollback()
            return "您未接入该对话"
        audit(session, agent, "transfer", conversation_id=conversation_id,
              detail={"to": target.name if target else "queue"})
        await session.commit()
        return await session.get(Conversation, conversation_id) or "该对话不存在"


async def seen(sessions: async_sessionmaker[AsyncSession], agent: Agent, now: dt.datetime) -> None:
    """The agent's console is open: mark them online (at most one write per SEEN_EVERY)."""
    if agent.last_seen_at is not None and now - agent.last_seen_at < SEEN_EVERY:
        return
    async with sessions() as session:
        await session.execute(update(Agent).where(Agent.id == agent.id).values(last_seen_at=now))
        await session.commit()


async def gone(sessions: async_sessionmaker[AsyncSession], agent: Agent) -> None:
    """Logged out: no longer counted online."""
    async with sessions() as session:
        await session.execute(update(Agent).where(Agent.id == agent.id).values(last_seen_at=None))
        await session.commit()


@dataclass(frozen=True)
class Presence:
    online: list[str]
    busy: list[str]  # online agents holding a conversation


async def presence(sessions: async_sessionmaker[AsyncSession], now: dt.datetime) -> Presence:
    async with sessions() as session:
        online = list(await session.scalars(
            select(Agent.name).where(Agent.active.is_(True), Agent.last_seen_at >= now - ONLINE_WITHIN)
            .order_by(Agent.name)))
        busy = set(await session.scalars(
            select(Agent.name).join(Conversation, Conversation.agent_id == Agent.id)
            .where(Conversation.state == "with_agent")))
    return Presence(online, [n for n in online if n in busy])


async def handle_seconds(sessions: async_sessionmaker[AsyncSession], since: dt.datetime) -> list[int]:
    """How long agents held the conversations they finished since then (release, close)."""
    async with sessions() as session:
        rows = await session.scalars(select(AgentAudit.detail).where(
            AgentAudit.action.in_(("release", "close")), AgentAudit.created_at >= since))
        return [int(d["handled_s"]) for d in rows if d and d.get("handled_s") is not None]


async def reveal(sessions: async_sessionmaker[AsyncSession], agent: Agent, conversation_id: int) -> None:
    """A full read of the citizen's phone: in the audit log before it is shown."""
    async with sessions() as session:
        audit(session, agent, "reveal_phone", conversation_id=conversation_id)
        await session.commit()
