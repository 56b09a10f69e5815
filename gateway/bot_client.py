"""Talk to the Rasa server over its REST channel (the bot runs in its own Python 3.10 process).

Messages enter Rasa through a first-come-first-served gate of a few at a time. Rasa runs NLU and
policies on one event loop; fifty requests at once do not make it faster (it serves fewer
messages a second under concurrency than one at a time) and it answers them in no particular order, so the slowest wait far
longer than their place in the queue. Admitted in order, a message waits for those ahead of it
only, and Rasa's memory stays bounded under a burst.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import aiohttp

from storage.conversations import Conversation


class BotUnavailable(RuntimeError):
    """Rasa did not answer; the message is kept and retried, the citizen gets an apology."""


_tracker_key = [b""]  # set once at start from the configuration (gateway.config.tracker_key)


def use_tracker_key(key: bytes) -> None:
    """The secret of Rasa's tracker keys, for this process (the app sets it from its settings)."""
    _tracker_key[0] = key


def bot_sender(conv: Conversation) -> str:
    """Rasa's tracker key: stable per citizen and channel, and not the citizen's phone number or
    openid (which would otherwise sit in Rasa's tracker store and logs). A keyed HMAC: an unsalted
    hash of an 11-digit phone number is reversed by trying them all in seconds."""
    return hmac.new(_tracker_key[0], f"{conv.channel}:{conv.sender_id}".encode(), hashlib.sha256).hexdigest()[:32]


class RasaClient:
    def __init__(
        self, base_url: str, session: aiohttp.ClientSession, timeout_s: float = 30.0, concurrency: int = 4,
        token: str = "",
    ) -> None:
        """`token`: Rasa's --auth-token, sent to its HTTP API (its REST channel does not check it)."""
        self.base_url = base_url.rstrip("/")
        self._auth = {"token": token} if token else {}
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._gate = asyncio.Semaphore(concurrency) if concurrency > 0 else None  # 0: no gate

    async def send(self, sender: str, text: str, metadata: dict[str, Any]) -> list[dict[str, Any]]:
        """The timeout covers the wait at the gate too: a message that cannot be answered in time
        is kept as pending and retried, rather than holding the citizen indefinitely."""
        body = {"sender": sender, "message": text, "metadata": metadata}
        try:
            async with asyncio.timeout(self._timeout.total):
                if self._gate is None:
                    data = await self._post(body)
                else:
                    async with self._gate:
                        data = await self._post(body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BotUnavailable(f"rasa unreachable: {type(exc).__name__}") from exc
        if not isinstance(data, list):
            raise BotUnavailable("rasa answered with something other than a list")
        return data

    async def _post(self, body: dict[str, Any]) -> Any:
        async with self._session.post(f"{self.base_url}/webhooks/rest/webhook", json=body) as resp:
            if resp.status != 200:
                raise BotUnavailable(f"rasa answered HTTP {resp.status}")
            return await resp.json(content_type=None)

    async def parse(self, text: str) -> dict[str, Any]:
        """NLU only (`/model/parse`, needs --enable-api): what `hotline classify` scores."""
        try:
            async with self._session.post(
                f"{self.base_url}/model/parse", json={"text": text}, params=self._auth, timeout=self._timeout
            ) as resp:
                if resp.status != 200:
                    raise BotUnavailable(f"rasa answered HTTP {resp.status}")
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BotUnavailable(f"rasa unreachable: {type(exc).__name__}") from exc

    async def tracker_event(self, sender: str, event: dict[str, Any]) -> None:
        """Append an event to the bot's tracker (Rasa's tracker events API, needs --enable-api): a
        ConversationPaused (`{"event": "pause"}`) while a person holds the conversation, and
        ConversationResumed when it comes back, so Rasa's own record says who was answering."""
        try:
            async with self._session.post(
                f"{self.base_url}/conversations/{sender}/tracker/events", json=event, params=self._auth,
                timeout=self._timeout
            ) as resp:
                if resp.status != 200:
                    raise BotUnavailable(f"rasa answered HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BotUnavailable(f"rasa unreachable: {type(exc).__name__}") from exc

    async def slots(self, sender: str) -> dict[str, Any]:
        """The facts the bot collected (its tracker's slots); empty when Rasa cannot say."""
        try:
            async with self._session.get(
                f"{self.base_url}/conversations/{sender}/tracker", params={"include_events": "NONE", **self._auth},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                if resp.status != 200:
                    return {}
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError):
            return {}
        slots = data.get("slots") if isinstance(data, dict) else None
        return slots if isinstance(slots, dict) else {}

    async def healthy(self) -> bool:
        try:
            async with self._session.get(f"{self.base_url}/", timeout=aiohttp.ClientTimeout(total=3)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
