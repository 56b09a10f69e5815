"""End-to-end web messages/s and p50/p99 latency through the gateway, side by side with Rasa's own
REST webhook, at 1, 10 and 50 concurrent conversations; then the RSS of every process.

    .venv/bin/python -m bench.web_latency [--turns 4] [--levels 1 10 50]

Each conversation sends the same realistic turns (a complaint, the phone, a name) to both targets,
so the ratio is the gateway's overhead (storage, dedupe, routing, payload handling) over Rasa.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.app import create_app
from gateway.cli import bot_servers, free_port
from gateway.config import ROOT, Settings

TURNS = [
    "投诉天坛路有家饭店每天晚上把油烟直接排到居民楼，已经持续一个月了",
    "13800001234",
    "匿名",
    "/affirm",
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def conversation(http: aiohttp.ClientSession, url: str, turns: list[str], gateway: bool) -> list[float]:
    sender = f"bench-{uuid.uuid4().hex[:10]}"
    latencies = []
    for i, text in enumerate(turns):
        body: dict[str, object] = {"sender": sender, "message": text}
        if gateway:
            body["message_id"] = f"{sender}-{i}"
        started = time.perf_counter()
        async with http.post(url, json=body) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        latencies.append(time.perf_counter() - started)
    return latencies


async def level(url: str, concurrency: int, turns: list[str], gateway: bool, rounds: int) -> dict[str, float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(conversation(http, url, turns, gateway) for _ in range(concurrency * rounds))
        ) if concurrency == 1 else None
        if results is None:
            sem = asyncio.Semaphore(concurrency)

            async def limited() -> list[float]:
                async with sem:
                    return await conversation(http, url, turns, gateway)

            results = await asyncio.gather(*(limited() for _ in range(concurrency * rounds)))
        elapsed = time.perf_counter() - started
    flat = sorted(x for r in results for x in r)
    return {
        "msgs_per_s": len(flat) / elapsed,
        "p50_ms": statistics.median(flat) * 1000,
        "p99_ms": flat[min(len(flat) - 1, int(len(flat) * 0.99))] * 1000,
    }


async def run(levels: list[int], rounds: int, rasa_url: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    port = free_port()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp / 'bench.db'}", rasa_url=rasa_url, port=port)
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gateway_url = f"http://127.0.0.1:{port}/webhooks/rest/webhook"
    direct_url = f"{rasa_url}/webhooks/rest/webhook"
    # Warm both paths (TensorFlow's first calls are slow).
    await level(direct_url, 1, TURNS, False, 1)
    await level(gateway_url, 1, TURNS, True, 1)
    print(f"{'conc':>4} | {'rasa msg/s':>10} {'p50 ms':>8} {'p99 ms':>8} | {'gateway msg/s':>13} {'p50 ms':>8} "
          f"{'p99 ms':>8} | {'p50 ratio':>9} {'p99 ratio':>9}")
    for c in levels:
        # Interleave the two runs so machine noise hits both alike.
        direct = await level(direct_url, c, TURNS, False, rounds)
        via = await level(gateway_url, c, TURNS, True, rounds)
        print(f"{c:>4} | {direct['msgs_per_s']:>10.1f} {direct['p50_ms']:>8.1f} {direct['p99_ms']:>8.1f} | "
              f"{via['msgs_per_s']:>13.1f} {via['p50_ms']:>8.1f} {via['p99_ms']:>8.1f} | "
              f"{via['p50_ms'] / direct['p50_ms']:>9.3f} {via['p99_ms'] / direct['p99_ms']:>9.3f}", flush=True)
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--rounds", type=int, default=2, help="conversations per level = concurrency x rounds")
    args = parser.parse_args()
    logs = ROOT / "var" / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    rasa_port, action_port = free_port(), free_port()
    with bot_servers(rasa_port, action_port, None, logs) as rasa_url:
        asyncio.run(run(args.levels, args.rounds, rasa_url))
        import subprocess

        out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        print("\nRSS after the run:")
        print(f"  gateway + bench client (this process) {rss_mb(os.getpid()):8.0f} MB")
        for line in out.splitlines():
            pid, _, cmd = line.strip().partition(" ")
            if f"-p {rasa_port}" in cmd:
                print(f"  rasa server                          {rss_mb(int(pid)):8.0f} MB")
            elif f"--port {action_port}" in cmd:
                print(f"  action server                        {rss_mb(int(pid)):8.0f} MB")


if __name__ == "__main__":
    main()
