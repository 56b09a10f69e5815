"""Talk to the Rasa server over its REST channel (the bot runs in its own Python 3.10 process).

Messages enter Rasa through a first-come-first-served gate of a few at a time. Rasa runs NLU and
policies on one event loop; fifty requests at once do not make it faster (it serves fewer
messages a second under concurrency than one at a time) and it answers them in no particular order, so the slowest wait far
longer than their place in the queue. Admitted in order, a message waits for those ahead of it
only, and Rasa's memory stays bounded under a burst.

Several Rasa servers (comma-separated URLs) share one tracker store and Rasa's RedisLockStore: a
conversation goes to the server its sender hashes to, and to the next one when that refuses the
connection (the message never reached it, so it cannot be answered twice).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp


class BotUnavailable(RuntimeError):
    """Rasa did not answer; the message is kept and retried, the citizen gets an apology."""


class RasaClient:
    def __init__(
        self, base_url: str, session: aiohttp.ClientSession, timeout_s: float = 30.0, concurrency: int = 4
    ) -> None:
        self.base_urls = [url.strip().rstrip("/") for url in base_url.split(",") if url.strip()]
        if not self.base_urls:
            raise ValueError("no Rasa URL")
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        # `concurrency` per server; 0: no gate
        self._gate = asyncio.Semaphore(concurrency * len(self.base_urls)) if concurrency > 0 else None

    async def send(self, sender: str, text: str, metadata: dict[str, Any]) -> list[dict[str, Any]]:
        """The timeout covers the wait at the gate too: a message that cannot be answered in time
        is kept as pending and retried, rather than holding the citizen indefinitely."""
        body = {"sender": sender, "message": text, "metadata": metadata}
        try:
            async with asyncio.timeout(self._timeout.total):
                if self._gate is None:
                    data = await self._post(sender, body)
                else:
                    async with self._gate:
                        data = await self._post(sender, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BotUnavailable(f"rasa unreachable: {type(exc).__name__}") from exc
        if not isinstance(data, list):
            raise BotUnavailable("rasa answered with something other than a list")
        return data

    def _bases(self, sender: str) -> list[str]:
        """The sender's own server first, then the others in order."""
        first = zlib.crc32(sender.encode()) % len(self.base_urls)
        return self.base_urls[first:] + self.base_urls[:first]

    async def _failover(self, sender: str, call: Callable[[str], Awaitable[Any]]) -> Any:
        """`call` on the sender's server; on the next only when a server refused the connection."""
        bases = self._bases(sender)
        for base in bases[:-1]:
            try:
                return await call(base)
            except aiohttp.ClientConnectorError:
                continue
        return await call(bases[-1])

    async def _post(self, sender: str, body: dict[str, Any]) -> Any:
        async def post(base: str) -> Any:
            async with self._session.post(f"{base}/webhooks/rest/webhook", json=body) as resp:
                if resp.status != 200:
                    raise BotUnavailable(f"rasa answered HTTP {resp.status}")
                return await resp.json(content_type=None)

        return await self._failover(sender, post)

    async def parse(self, text: str) -> dict[str, Any]:
        """NLU only (`/model/parse`, needs --enable-api): what `hotline classify` scores."""
        async def post(base: str) -> dict[str, Any]:
            async with self._session.post(f"{base}/model/parse", json={"text": text}, timeout=self._timeout) as resp:
                if resp.status != 200:
                    raise BotUnavailable(f"rasa answered HTTP {resp.status}")
                return await resp.json(content_type=None)

        try:
            return await self._failover(text, post)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BotUnavailable(f"rasa unreachable: {type(exc).__name__}") from exc

    async def tracker_event(self, sender: str, event: dict[str, Any]) -> None:
        """Append an event to the bot's tracker (Rasa's tracker events API, needs --enable-api): a
        ConversationPaused (`{"event": "pause"}`) while a person holds the conversation, and
        ConversationResumed when it comes back, so Rasa's own record says who was answering."""
        async def post(base: str) -> None:
            async with self._session.post(
                f"{base}/conversations/{sender}/tracker/events", json=event, timeout=self._timeout
            ) as resp:
                if resp.status != 200:
                    raise BotUnavailable(f"rasa answered HTTP {resp.status}")

        try:
            await self._failover(sender, post)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BotUnavailable(f"rasa unreachable: {type(exc).__name__}") from exc

    async def slots(self, sender: str) -> dict[str, Any]:
        """The facts the bot collected (its tracker's slots); empty when Rasa cannot say."""
        async def get(base: str) -> Any:
            async with self._session.get(
                f"{base}/conversations/{sender}/tracker", params={"include_events": "NONE"},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                return await resp.json(content_type=None) if resp.status == 200 else {}

        try:
            data = await self._failover(sender, get)
        except (aiohttp.ClientError, TimeoutError):
            return {}
        slots = data.get("slots") if isinstance(data, dict) else None
        return slots if isinstance(slots, dict) else {}

    async def healthy(self) -> bool:
        """Some server answers (each conversation can fail over to it)."""
        return any(await self.health())

    async def health(self) -> list[bool]:
        """Whether each server answers, in the configured order (`/healthz`)."""
        return list(await asyncio.gather(*(self._up(base) for base in self.base_urls)))

    async def _up(self, base: str) -> bool:
        try:
            async with self._session.get(f"{base}/", timeout=aiohttp.ClientTimeout(total=3)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
