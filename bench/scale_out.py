"""Web messages/s through two gateway replicas against one, on the production shape
(gateway.cluster: two gateways on PostgreSQL + Redis, two Rasa servers sharing a PostgreSQL tracker
store and Rasa's RedisLockStore, one action server).

    .venv/bin/python -m bench.scale_out [--conversations 40] [--concurrency 16] [--rounds 3]

One cluster serves both runs, so the bot side is the same: the baseline sends every conversation
through replica 1; the other run spreads conversations over both replicas (as a load balancer
would). The two take turns round by round so a slow phase of the machine hits both alike; the
ratio is the median of the per-round ratios. Each conversation is a complaint, the phone,
anonymity and the confirmation: four messages and one work order.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import aiohttp

from gateway.cluster import start_cluster

TURNS = ("昨天晚上十点多，济源市天坛路和济源大道路口的烧烤店噪音太大，吵得根本睡不着，我要投诉",
         "{phone}", "匿名", "/affirm")


async def conversation(http: aiohttp.ClientSession, url: str) -> int:
    sender = f"bench-{uuid.uuid4().hex[:10]}"
    phone = f"139{uuid.uuid4().int % 10**8:08d}"
    for n, text in enumerate(TURNS):
        body = {"sender": sender, "message": text.format(phone=phone), "message_id": f"{sender}-{n}"}
        async with http.post(f"{url}/webhooks/rest/webhook", json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{url} answered {resp.status}")
            await resp.read()
    return len(TURNS)


async def run(urls: list[str], conversations: int, concurrency: int) -> float:
    """Messages/s for `conversations` conversations, `concurrency` at once, spread over `urls`."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with gate:
            return await conversation(http, urls[i % len(urls)])

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        started = time.perf_counter()
        messages = sum(await asyncio.gather(*(one(i) for i in range(conversations))))
        return messages / (time.perf_counter() - started)


async def compare(urls: list[str], conversations: int, concurrency: int, rounds: int) -> None:
    await run(urls, 4, 4)  # warm-up: Rasa's first turns load lazily
    one, two = [], []
    for _ in range(rounds):
        one.append(await run(urls[:1], conversations, concurrency))
        two.append(await run(urls, conversations, concurrency))
        print(f"  round: one replica {one[-1]:.1f} msg/s, two replicas {two[-1]:.1f} msg/s", flush=True)
    ratio = statistics.median(b / a for a, b in zip(one, two, strict=True))
    print(f"one replica   {statistics.median(one):.1f} msg/s (median of {rounds})")
    print(f"two replicas  {statistics.median(two):.1f} msg/s (median of {rounds})")
    print(f"ratio two/one {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rasa", type=int, default=2, help="Rasa servers behind the gateways")
    args = parser.parse_args()
    with start_cluster(gateways=2, rasa=args.rasa) as cluster:
        print(f"cluster: 2 gateways, {args.rasa} Rasa servers; {args.conversations} conversations "
              f"x {len(TURNS)} messages, {args.concurrency} at once", flush=True)
        asyncio.run(compare(cluster.gateway_urls, args.conversations, args.concurrency, args.rounds))


if __name__ == "__main__":
    main()
