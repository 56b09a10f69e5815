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
        won = await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id, Conversation.state == "waiting")
            .values(state="with_agent", agent_id=agent.id, updated_at=utcnow())
        )
        if won.rowcount == 1:
            audit(session, agent, "claim", conversation_id=conversation_id)
            await session.commit()
            return Claim(True)
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
                 action: str) -> Conversation | None:
    """Release (back to the bot) or close: only by the agent who holds it. The conversation, or None."""
    async with sessions() as session:
        done = await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id, Conversation.state == "with_agent",
                   Conversation.agent_id == agent.id)
            .values(state="bot", agent_id=None, waiting_since=None, updated_at=utcnow())
        )
        if done.rowcount != 1:
            await session.rollback()
            return None
        audit(session, agent, action, conversation_id=conversation_id)
        await session.commit()
        return await session.get(Conversation, conversation_id)


async def held(sessions: async_sessionmaker[AsyncSession], agent: Agent, conversation_id: int) -> Conversation | None:
    """The conversation if this agent holds it now (a fresh read: ownership may have changed)."""
    async with sessions() as session:
        conv = await session.get(Conversation, conversation_id)
        ok = conv is not None and conv.state == "with_agent" and conv.agent_id == agent.id
        return conv if ok else None
