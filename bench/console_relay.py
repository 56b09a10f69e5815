"""The agents' console on two gateway replicas sharing PostgreSQL and Redis: the claim race (two
agents, one on each replica, claim the same conversation at once) and relay latency both ways
(agent → citizen's page, citizen's page → agent's console) with the two on different replicas.

    .venv/bin/python -m bench.console_relay [--rounds 100] [--sqlite]

No bot is needed: while a person holds a conversation Rasa is not asked. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.postgres import postgres
from gateway.app import ROUTER, create_app
from gateway.botproc import free_port
from gateway.config import Settings
from handoff import agents
from storage.base import utcnow
from storage.conversations import Conversation

PASSWORD = "bench password 1"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"n": len(ms), "p50_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2), "max_ms": round(ordered[-1], 2)}


async def replica(settings: Settings) -> tuple[web.AppRunner, str]:
    app = create_app(settings, background=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def logged_in(base: str, name: str) -> tuple[aiohttp.ClientSession, dict[str, str]]:
    http = aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True))  # an IP host
    resp = await http.post("/console/api/login", json={"name": name, "password": PASSWORD})
    return http, {"X-CSRF-Token": (await resp.json())["csrf"]}


async def run(database_url: str, redis_url: str, rounds: int) -> dict[str, Any]:
    settings = Settings(database_url=database_url, redis_url=redis_url, console_secret="bench",
                        rasa_url=f"http://127.0.0.1:{free_port()}", retry_interval_s=3600.0)
    one, base_one = await replica(settings)
    two, base_two = await replica(settings)
    sessions = one.app[ROUTER].sessions
    for name in ("张伟", "李娜"):
        await agents.add(sessions, name, PASSWORD, "agent")
    (zhang, zhang_h), (li, li_h) = await logged_in(base_one, "张伟"), await logged_in(base_two, "李娜")
    try:
        return {"claim_race": await claim_race(sessions, (zhang, zhang_h), (li, li_h), rounds),
                **await relay(sessions, base_one, (li, li_h), rounds)}
    finally:
        for http in (zhang, li):
            await http.close()
        for runner in (one, two):
            await runner.cleanup()


async def waiting(sessions: Any, sender: str) -> int:
    async with sessions() as session:
        conv = Conversation(channel="web", sender_id=sender, profile="jiyuan", state="waiting", waiting_since=utcnow())
        session.add(conv)
        await session.commit()
        return conv.id


async def claim_race(sessions: Any, a: tuple[aiohttp.ClientSession, dict[str, str]],
                     b: tuple[aiohttp.ClientSession, dict[str, str]], rounds: int) -> dict[str, Any]:
    """Both agents claim the same conversation at once: exactly one must win, every round."""
    both_ms: list[float] = []
    request_ms: list[float] = []
    winners = {"张伟": 0, "李娜": 0}
    bad_rounds = 0

    async def claim(agent: tuple[aiohttp.ClientSession, dict[str, str]], conv_id: int) -> int:
        started = time.perf_counter()
        async with agent[0].post(f"/console/api/conversations/{conv_id}/claim", headers=agent[1]) as resp:
            await resp.read()
            request_ms.append((time.perf_counter() - started) * 1000)
            return resp.status

    for i in range(rounds):
        conv_id = await waiting(sessions, f"race-{i}")
        started = time.perf_counter()
        statuses = await asyncio.gather(claim(a, conv_id), claim(b, conv_id))
        both_ms.append((time.perf_counter() - started) * 1000)
        if sorted(statuses) != [200, 409]:
            bad_rounds += 1
        else:
            winners[("张伟", "李娜")[statuses.index(200)]] += 1
    return {"rounds": rounds, "rounds_without_exactly_one_winner": bad_rounds, "wins": winners,
            "both_answered": summary(both_ms), "per_claim": summary(request_ms)}


async def relay(sessions: Any, citizen_base: str, agent: tuple[aiohttp.ClientSession, dict[str, str]],
                rounds: int) -> dict[str, Any]:
    """The citizen's page on replica one, the agent's console on replica two."""
    sender = "relay-citizen"
    conv_id = await waiting(sessions, sender)
    http, headers = agent
    async with aiohttp.ClientSession() as citizen_http, \
            citizen_http.ws_connect(f"{citizen_base}/ws", params={"sender": sender}) as page, \
            http.ws_connect("/console/ws") as console:
        await http.post(f"/console/api/conversations/{conv_id}/claim", headers=headers)
        await page.receive_json(timeout=10)  # the greeting
        to_citizen: list[float] = []
        to_agent: list[float] = []
        for i in range(rounds):
            text = f"坐席第{i}条"
            started = time.perf_counter()
            await http.post(f"/console/api/conversations/{conv_id}/messages", json={"text": text}, headers=headers)
            while (await page.receive_json(timeout=10)).get("text") != text:
                pass
            to_citizen.append((time.perf_counter() - started) * 1000)
            text = f"市民第{i}条"
            started = time.perf_counter()
            await page.send_json({"text": text, "message_id": f"relay-{i}"})
            while (await console.receive_json(timeout=10)).get("text") != text:
                pass
            to_agent.append((time.perf_counter() - started) * 1000)
    return {"relay_agent_to_citizen": summary(to_citizen), "relay_citizen_to_agent": summary(to_agent)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--sqlite", action="store_true", help="one SQLite file instead of PostgreSQL")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # "could not tell the bot pause": no bot runs here, by design
    with contextlib.ExitStack() as stack:
        if args.sqlite:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
        else:
            url = stack.enter_context(postgres())
        redis_url = stack.enter_context(redis_server())
        result = asyncio.run(run(url, redis_url, args.rounds))
    print(json.dumps({"database": "sqlite" if args.sqlite else "postgresql", **result}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
