"""The access-token cache in the database, shared by replicas that run without Redis."""

from __future__ import annotations

import asyncio

from channels.wechat.api import DbTokenStore


async def test_two_replicas_storing_their_first_token_at_once_both_succeed(sessions) -> None:  # noqa: ANN001
    a, b = DbTokenStore(sessions), DbTokenStore(sessions)
    for round_ in range(20):  # the race needs both reads before either insert: try it many times
        appid = f"wx{round_:04d}"
        await asyncio.gather(a.put(appid, f"token-a-{round_}", 7200), b.put(appid, f"token-b-{round_}", 7200))
        assert await a.get(appid) in (f"token-a-{round_}", f"token-b-{round_}")
