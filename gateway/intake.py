"""The Intake every channel is given (channels.base.Intake): the router keeps and answers messages,
Answering answers acknowledged ones in the background. Channels see only this port."""

from __future__ import annotations

from contextlib import AbstractContextManager

from common.messages import InboundMessage, Prepare, Reply
from gateway.answering import Answering
from gateway.router import Router
from storage.conversations import Conversation


class GatewayIntake:
    def __init__(self, router: Router, answering: Answering) -> None:
        self.router = router
        self.answering = answering

    async def handle(self, msg: InboundMessage) -> list[Reply]:
        return await self.router.handle(msg)

    async def accept(self, msg: InboundMessage) -> Conversation | None:
        return await self.router.accept(msg)

    def answer_later(self, conv: Conversation, prepare: Prepare | None = None) -> None:
        self.answering.submit(conv, prepare)

    def acknowledging(self) -> AbstractContextManager[None]:
        return self.answering.acknowledging()

    def wake_outbox(self) -> None:
        if self.router.on_enqueued is not None:
            self.router.on_enqueued()
