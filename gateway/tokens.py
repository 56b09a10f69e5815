"""Named bearer tokens for handling units and operators, each with scopes, made and revoked with
`hotline tokens`. A token is 32 random bytes shown once; the database keeps its SHA-256. A slow hash
(argon2) protects guessable passwords, not 256-bit random tokens, and would cost tens of
milliseconds on every API call; a fast hash can be looked up by its index in one query.

HOTLINE_API_TOKEN, when set, is the operator's token with every scope (named "env")."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.models import ApiToken
from storage.base import utcnow

SCOPES = {
    "orders:read": "read work orders (contacts masked where the citizen asked for confidentiality or reported someone)",
    "events:write": "post work-order events",
    "metrics:read": "scrape /metrics",
    "contact:read": "read full phone and ID numbers of any order (each read is audited)",
}
PREFIX = "hl_"


class TokenError(ValueError):
    """A request an operator can correct (unknown scope, name taken, no such token)."""


@dataclass(frozen=True)
class Caller:
    """Who called the API, and what they may do."""

    name: str
    scopes: frozenset[str]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def add(sessions: async_sessionmaker[AsyncSession], name: str, scopes: list[str]) -> str:
    """Make a token; the returned secret is shown once and never stored."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise TokenError(f"scopes must be some of {', '.join(SCOPES)}" + (f"; unknown: {', '.join(unknown)}"
                                                                           if unknown else ""))
    if not name or len(name) > 64 or name == "env":
        raise TokenError("name must be 1-64 characters and not 'env'")
    token = PREFIX + secrets.token_urlsafe(32)
    async with sessions() as session:
        session.add(ApiToken(name=name, token_hash=digest(token), scopes=sorted(set(scopes)), created_at=utcnow()))
        try:
            await session.commit()
        except IntegrityError as exc:
            raise TokenError(f"token {name} exists (revoke it first, or choose another name)") from exc
    return token


async def listing(sessions: async_sessionmaker[AsyncSession]) -> list[ApiToken]:
    async with sessions() as session:
        return list((await session.scalars(select(ApiToken).order_by(ApiToken.name))).all())


async def revoke(sessions: async_sessionmaker[AsyncSession], name: str) -> None:
    async with sessions() as session:
        done = await session.execute(update(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
                                     .values(revoked_at=utcnow()))
        await session.commit()
    if done.rowcount != 1:
        raise TokenError(f"no active token named {name}")


async def resolve(sessions: async_sessionmaker[AsyncSession], token: str, env_token: str) -> Caller | None:
    """The caller a bearer token names, or None (unknown, revoked, empty)."""
    if not token:
        return None
    if env_token and hmac.compare_digest(token.encode(), env_token.encode()):
        return Caller("env", frozenset(SCOPES))
    async with sessions() as session:
        row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == digest(token),
                                                          ApiToken.revoked_at.is_(None)))
    return Caller(row.name, frozenset(row.scopes)) if row is not None else None
