"""Talk to the Rasa server over its REST channel (the bot runs in its own Python 3.10 process)."""

from __future__ import annotations

from typing import Any

import aiohttp


class BotUnavailable(RuntimeError):
    """Rasa did not answer; the message is kept and retried, the citizen gets an apology."""


class RasaClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, sender: str, text: str, metadata: dict[str, Any]) -> list[dict[str, Any]]:
        body = {"sender": sender, "message": text, "metadata": metadata}
        try:
            async with self._session.post(
                f"{self.base_url}/webhooks/rest/webhook", json=body, timeout=self._timeout
            ) as resp:
                if resp.status != 200:
                    raise BotUnavailable(f"rasa answered HTTP {resp.status}")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BotUnavailable(f"rasa unreachable: {type(exc).__name__}") from exc
        if not isinstance(data, list):
            raise BotUnavailable("rasa answered with something other than a list")
        return data

    async def parse(self, text: str) -> dict[str, Any]:
        """NLU only (`/model/parse`, needs --enable-api): what `hotline classify` scores."""
        try:
            async with self._session.post(
                f"{self.base_url}/model/parse", json={"text": text}, timeout=self._timeout
            ) as resp:
                if resp.status != 200:
                    raise BotUnavailable(f"rasa answered HTTP {resp.status}")
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BotUnavailable(f"rasa unreachable: {type(exc).__name__}") from exc

    async def healthy(self) -> bool:
        try:
            async with self._session.get(f"{self.base_url}/", timeout=aiohttp.ClientTimeout(total=3)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
