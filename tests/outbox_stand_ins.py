"""Stand-ins for the outbox tests: a provider that answers from a script, and a conversation's replies
written as the router writes them."""

from __future__ import annotations

import asyncio

from storage.conversations import Conversation, Message
from storage.outbox import OutboxItem, SendResult, enqueue


class ScriptedProvider:
    """A provider that answers from a script, then 'sent'; records every attempt."""

    def __init__(self, *outcomes: SendResult, delay_s: float = 0.0) -> None:
        self.outcomes = list(outcomes)
        self.delay_s = delay_s
        self.attempts: list[int] = []

    async def send(self, item: OutboxItem) -> SendResult:
        self.attempts.append(item.id)
        await asyncio.sleep(self.delay_s)
        if self.outcomes:
            return self.outcomes.pop(0)
        return SendResult("sent", provider_id=f"p-{item.id}")


async def replies(sessions, texts: list[str], channel: str = "test") -> list[int]:  # noqa: ANN001
    """Replies of one conversation, as the router writes them: a message each, enqueued in order."""
    async with sessions() as session:
        conv = Conversation(channel=channel, sender_id="citizen", profile="jiyuan", state="bot")
        session.add(conv)
        await session.flush()
        ids = []
        for text in texts:
            msg = Message(conversation_id=conv.id, direction="out", text=text, status="outbox")
            session.add(msg)
            await session.flush()
            ids.append(enqueue(session, channel=channel, recipient="citizen", body={"text": text},
                               conversation_id=conv.id, message_id=msg.id))
        media = enqueue(session, channel=channel, recipient="citizen", body={"media_id": "m"}, conversation_id=conv.id)
        await session.commit()
        return [i.id for i in ids] + [media.id]
