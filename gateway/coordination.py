"""What several gateway replicas must agree on: one per-conversation turn at a time, one claim per key,
one count per rate limit.

In-process by default (one gateway); Redis when HOTLINE_REDIS_URL is set (several replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class Coordinator(Protocol):
    async def claim(self, key: str, ttl_s: int) -> bool:
        """True for the first caller with this key within ttl_s; duplicates get False."""

    async def seen(self, key: str) -> bool:
        """Whether `key` is claimed (and not expired): a read that claims nothing."""

    async def claim_value(self, key: str, value: str, ttl_s: int) -> str:
        """The value the first caller claimed `key` with (ours when we were first), atomically."""

    def lock(self, key: str, timeout_s: float = 60.0) -> contextlib.AbstractAsyncContextManager[None]:
        """Serialises work on one conversation across tasks (and replicas, with Redis)."""

    async def allow(self, key: str, limit: int, window_s: int) -> bool:
        """A rate limit counted in fixed windows of `window_s` (on the wall clock, so replicas share
        them): True while `key` has had at most `limit` hits in the current window, this one included.
        True when the count cannot be taken: a limiter never costs a citizen's message."""

    async def close(self) -> None: ...


class LocalCoordinator:
    def __init__(self) -> None:
        self._claims: dict[str, tuple[float, str]] = {}  # key → (expiry, value)
        # One queue per TTL: with one clock and one TTL, claim order is expiry order, so the next to
        # expire is always at a queue's front.
        self._queues: dict[int, OrderedDict[str, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._windows: dict[int, tuple[int, dict[str, int]]] = {}  # window_s → (window number, hits by key)

    def _put_if_absent(self, key: str, value: str, ttl_s: int) -> str | None:
        """None when `key` was free (now ours), else the live claim's value. O(1) amortised: expired
        claims leave from their queue's front, each once; nothing walks the live ones (a full sweep
        at 100,000 ids cost ~6 ms per message, on the event loop)."""
        now = time.monotonic()
        for queue in self._queues.values():
            while queue:
                old, expiry = next(iter(queue.items()))
                if expiry > now:
                    break
                queue.popitem(last=False)
                if self._claims.get(old, (None,))[0] == expiry:
                    del self._claims[old]
        held = self._claims.get(key)
        if held is not None and held[0] > now:
            return held[1]
        self._claims[key] = (now + ttl_s, value)
        self._queues.setdefault(ttl_s, OrderedDict())[key] = now + ttl_s
        return None

    async def claim(self, key: str, ttl_s: int) -> bool:
        return self._put_if_absent(key, "1", ttl_s) is None

    async def claim_value(self, key: str, value: str, ttl_s: int) -> str:
        return self._put_if_absent(key, value, ttl_s) or value

    async def seen(self, key: str) -> bool:
        return self._claims.get(key, (0.0,))[0] > time.monotonic()

    @contextlib.asynccontextmanager
    async def lock(self, key: str, timeout_s: float = 60.0) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield
        if not lock.locked() and not getattr(lock, "_waiters", None):
            self._locks.pop(key, None)

    async def allow(self, key: str, limit: int, window_s: int) -> bool:
        """O(1); memory is the current window's keys (a new window starts with an empty count)."""
        number = int(time.time()) // window_s
        started, hits = self._windows.get(window_s, (None, {}))
        if started != number:
            hits = {}
            self._windows[window_s] = (number, hits)
        hits[key] = hits.get(key, 0) + 1
        return hits[key] <= limit

    async def close(self) -> None:
        return None


class RedisCoordinator:
    def __init__(self, url: str, prefix: str = "hotline:") -> None:
        self._redis = aioredis.from_url(url)
        self._prefix = prefix

    async def claim(self, key: str, ttl_s: int) -> bool:
        return bool(await self._redis.set(f"{self._prefix}claim:{key}", "1", nx=True, ex=ttl_s))

    async def seen(self, key: str) -> bool:
        return bool(await self._redis.exists(f"{self._prefix}claim:{key}"))

    async def claim_value(self, key: str, value: str, ttl_s: int) -> str:
        name = f"{self._prefix}claim:{key}"
        if await self._redis.set(name, value, nx=True, ex=ttl_s):
            return value
        held = await self._redis.get(name)  # SET NX is atomic: this is the first caller's value
        return held.decode() if held is not None else value

    async def allow(self, key: str, limit: int, window_s: int) -> bool:
        """Redis's fixed-window counter: INCR a key named by the window, which expires with it."""
        name = f"{self._prefix}rate:{key}:{int(time.time()) // window_s}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                hits, _ = await pipe.incr(name).expire(name, window_s).execute()
        except (RedisError, OSError) as exc:
            log.warning("rate limit not counted (let through): redis %s", type(exc).__name__)
            return True
        return int(hits) <= limit

    @contextlib.asynccontextmanager
    async def lock(self, key: str, timeout_s: float = 60.0) -> AsyncIterator[None]:
        lock = self._redis.lock(f"{self._prefix}lock:{key}", timeout=timeout_s, blocking_timeout=timeout_s)
        token = uuid.uuid4().hex.encode()
        if not await lock.acquire(token=token):
            raise TimeoutError(f"lock {key} not acquired in {timeout_s}s")
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await lock.release()

    async def close(self) -> None:
        await self._redis.aclose()


def make_coordinator(redis_url: str | None) -> Coordinator:
    return RedisCoordinator(redis_url) if redis_url else LocalCoordinator()
