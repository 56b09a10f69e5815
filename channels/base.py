"""The channel contract, in the spirit of Rasa's InputChannel/OutputChannel.

A channel has a name, its HTTP routes, a start and a stop, and the outbox senders that deliver to
its provider. It turns provider traffic into InboundMessage and hands it to the Intake it is given
at start; it knows nothing of work orders, surveys, the router or the other channels. What another
package decides about a channel's traffic (a survey reply hook, what to do with an undeliverable
reply) is passed in by the app as a policy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.messages import InboundMessage, Prepare, Reply
from gateway.config import Settings
from gateway.coordination import Coordinator
from profiles import Profile
from storage.conversations import Conversation
from storage.outbox import Sender


class Intake(Protocol):
    """The gateway as a channel sees it."""

    async def handle(self, msg: InboundMessage) -> list[Reply]:
        """Keep, route and answer a message now (a channel that answers in its HTTP response)."""
        ...

    async def accept(self, msg: InboundMessage) -> Conversation | None:
        """Keep a message so the provider can be acknowledged at once; None for a duplicate."""
        ...

    def answer_later(self, conv: Conversation, prepare: Prepare | None = None) -> None:
        """Answer an accepted conversation in the background (replies leave through the outbox)."""
        ...

    def acknowledging(self) -> AbstractContextManager[None]:
        """Around an acknowledgement, so background answering gives it the event loop first."""
        ...

    def wake_outbox(self) -> None:
        """After a commit that queued outbox items: deliver them now rather than on the next tick."""
        ...


@dataclass(frozen=True)
class ChannelContext:
    """What the app gives every channel at start."""

    intake: Intake
    sessions: async_sessionmaker[AsyncSession]
    http: aiohttp.ClientSession
    coordinator: Coordinator
    settings: Settings
    profile: Profile
    outbox_max_attempts: int = 10


class Channel(Protocol):
    """One way citizens reach the hotline."""

    name: str

    def add_routes(self, app: web.Application) -> None: ...

    async def start(self, context: ChannelContext) -> None: ...

    async def stop(self) -> None: ...

    def senders(self) -> Mapping[str, Sender]:
        """Outbox senders by outbox channel name (empty for a channel that answers in its response)."""
        ...

    def outbox_channels(self) -> set[str]:
        """Conversation channels whose replies leave through the outbox rather than the HTTP response;
        known from configuration, before start (the app gives them to the router it builds)."""
        ...

    async def push(self, channel: str, sender_id: str, replies: list[Reply]) -> bool:
        """Deliver replies produced later (the bot came back) where the channel can; False otherwise."""
        ...

    async def forget(self, session: AsyncSession, before: dt.datetime) -> dict[str, int]:
        """Retention (`hotline retention run`): anonymise or delete what the channel's own tables keep
        of citizens from before `before`, in the caller's unit of work (its audit row commits with
        it); counts by kind for that row. Needs no start: the job runs outside the serving app."""
        ...
