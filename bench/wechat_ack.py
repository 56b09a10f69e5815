"""WeChat push-to-acknowledgement latency: p50/p99 for 50 concurrent pushes while the bot is slow
(WeChat retries anything not answered within 5 s, so the answer must not wait for the bot), side by
side with the same pushes while the bot answers at once.

    .venv/bin/python -m bench.wechat_ack [--rounds 4] [--concurrency 50] [--bot-delay 2] [--postgres]

Everything runs on loopback, in three processes, as in production where WeChat's servers, the
gateway and Rasa are different machines:
- the gateway (`hotline serve`, SQLite, no Redis, configured through HOTLINE_* variables);
- the pusher, standing in for WeChat's servers: it holds one keep-alive connection per concurrent
  push, writes each prepared request in one call and times it from that write to the last byte of
  the answer. It does nothing else, so its own event loop does not sit in the measurement (an
  aiohttp client sharing a loop with the stand-ins below added up to ~20 ms per burst of 50);
- this process: a stand-in Rasa REST webhook that sleeps before answering, and the local WeChat
  API server from the tests that receives the replies.
Pushes are secure-mode JSON (AES), signed and encrypted before the clock starts, each from its own
citizen, so the bot calls of a round run concurrently.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import urlencode

import aiohttp

from bench.postgres import postgres
from gateway.botproc import free_port
from gateway.config import ROOT
from tests.wechat_api_server import MINI, SlowBot, WeChatAPIServer, WeChatUser, apps_setting, signed_push


def cpu_times() -> list[int]:
    """The machine's cumulative CPU jiffies (user nice system idle iowait irq softirq steal)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def steal_percent(before: list[int], after: list[int]) -> float:
    """CPU time the hypervisor gave to other guests: on a shared VM, why two runs differ."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    return 100 * delta[7] / max(1, sum(delta))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


Push = tuple[dict[str, str], bytes]


def pusher(conn: Connection, port: int, path: str) -> None:
    """The pusher process: receives a burst (a list of signed pushes), sends them all at once and
    answers with each one's acknowledgement time in ms; an empty list ends it."""
    import uvloop

    uvloop.run(_push_bursts(conn, port, path))


async def _push_bursts(conn: Connection, port: int, path: str) -> None:
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    loop = asyncio.get_running_loop()
    while pushes := await loop.run_in_executor(None, conn.recv):
        while len(idle) < len(pushes):
            idle.append(await asyncio.open_connection("127.0.0.1", port))
        requests = [
            f"POST {path}?{urlencode(query)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            for query, body in pushes
        ]
        connections = idle[: len(pushes)]
        started = [0.0] * len(pushes)
        for i, ((_, writer), request) in enumerate(zip(connections, requests, strict=True)):
            started[i] = time.perf_counter()
            writer.write(request)
        elapsed = await asyncio.gather(*(_answer(reader, t0) for (reader, _), t0 in zip(connections, started, strict=True)))
        conn.send(list(elapsed))
    for _, writer in idle:
        writer.close()


async def _answer(reader: asyncio.StreamReader, started: float) -> float:
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    body = await reader.readexactly(length)
    elapsed = (time.perf_counter() - started) * 1000
    assert status == b"200" and body == b"success", (status, body)
    return elapsed


async def burst(to_pusher: Connection, concurrency: int) -> list[float]:
    """`concurrency` pushes from as many citizens, all at once; returns each one's ack time in ms."""
    pushes: list[Push] = []
    for _ in range(concurrency):
        user = WeChatUser(None, None, MINI)  # type: ignore[arg-type] - only its push fields are used
        pushes.append(signed_push(MINI, user.fields("text", Content="天坛路上的路灯坏了好几个星期了")))
    to_pusher.send(pushes)
    return await asyncio.get_running_loop().run_in_executor(None, to_pusher.recv)


class GatewayCpu:
    def __init__(self, pid: int) -> None:
        self.stat = Path(f"/proc/{pid}/stat")

    def ms(self) -> float:
        """User + system CPU the gateway process has used (10 ms resolution)."""
        fields = self.stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


async def scenario(to_pusher: Connection, api: WeChatAPIServer, bot: SlowBot, gateway: GatewayCpu, *,
                   delay_s: float, concurrency: int, rounds: int) -> dict[str, float]:
    bot.delay_s = delay_s
    sent_before, calls_before = len(api.sent), bot.calls
    cpu_before, gateway_before = cpu_times(), gateway.ms()
    started = time.perf_counter()
    acks: list[float] = []
    for _ in range(rounds):
        acks += await burst(to_pusher, concurrency)
    first = acks[:concurrency]  # the first burst meets a quiet gateway; later ones meet the answering of earlier ones
    acked_s = time.perf_counter() - started
    steal = steal_percent(cpu_before, cpu_times())
    expected = concurrency * rounds
    for _ in range(2400):  # every push gets its reply, later (at most 2 minutes)
        if len(api.sent) - sent_before >= expected:
            break
        await asyncio.sleep(0.05)
    else:
        raise TimeoutError(f"only {len(api.sent) - sent_before} of {expected} replies arrived")
    return {
        "pushes": expected,
        "p50": statistics.median(acks),
        "p99": percentile(acks, 0.99),
        "max": max(acks),
        "first_p99": percentile(first, 0.99),
        "acked_s": acked_s,
        "replied_s": time.perf_counter() - started,
        "bot_calls": bot.calls - calls_before,
        "steal": steal,
        "cpu_per_push": (gateway.ms() - gateway_before) / expected,
    }


async def wait_up(http: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        if proc.returncode is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}")
        try:
            async with http.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("the gateway did not start in 60 s")


async def run(concurrency: int, rounds: int, bot_delay_s: float, database_url: str | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-wechat-"))
    bot = SlowBot()
    bot_runner, bot_url = await bot.start()
    api = WeChatAPIServer({MINI.appid: MINI.secret}, enforce_window=False)
    await api.start()
    port = free_port()
    env = os.environ | {
        "HOTLINE_DATABASE_URL": database_url or f"sqlite+aiosqlite:///{tmp / 'bench.db'}", "HOTLINE_RASA_URL": bot_url,
        "HOTLINE_HOST": "127.0.0.1", "HOTLINE_PORT": str(port), "HOTLINE_WECHAT_APPS": apps_setting((MINI,)),
        "HOTLINE_WECHAT_API_BASE": api.url, "HOTLINE_OUTBOX_INTERVAL_S": "0.2",
    }
    log = (tmp / "gateway.log").open("wb")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "serve", env=env, cwd=ROOT,
                                                stdout=log, stderr=subprocess.STDOUT)
    to_pusher, pusher_end = multiprocessing.get_context("spawn").Pipe()
    pushing = multiprocessing.get_context("spawn").Process(target=pusher, args=(pusher_end, port, f"/wechat/{MINI.name}"))
    pushing.start()
    try:
        async with aiohttp.ClientSession() as http:
            await wait_up(http, f"http://127.0.0.1:{port}/healthz", proc)
        gateway = GatewayCpu(proc.pid)
        await scenario(to_pusher, api, bot, gateway, delay_s=0, concurrency=5, rounds=1)  # warm up
        rows = [
            ("bot idle, 1 at a time", await scenario(to_pusher, api, bot, gateway, delay_s=0, concurrency=1, rounds=20)),
            (f"bot idle, {concurrency} concurrent",
             await scenario(to_pusher, api, bot, gateway, delay_s=0, concurrency=concurrency, rounds=rounds)),
            (f"bot {bot_delay_s:g} s, {concurrency} concurrent",
             await scenario(to_pusher, api, bot, gateway, delay_s=bot_delay_s, concurrency=concurrency, rounds=rounds)),
        ]
    finally:
        to_pusher.send([])
        pushing.join(10)
        proc.terminate()
        await proc.wait()
        log.close()
        await api.close()
        await bot_runner.cleanup()
    print(f"{'scenario':<26} | {'pushes':>6} {'ack p50 ms':>10} {'ack p99 ms':>10} {'ack max ms':>10} "
          f"{'1st burst p99':>13} | {'all acked s':>11} {'all replied s':>13} | {'gateway CPU ms/push':>19} "
          f"{'steal %':>7}")
    for name, r in rows:
        print(f"{name:<26} | {r['pushes']:>6.0f} {r['p50']:>10.1f} {r['p99']:>10.1f} {r['max']:>10.1f} "
              f"{r['first_p99']:>13.1f} | {r['acked_s']:>11.2f} {r['replied_s']:>13.2f} | {r['cpu_per_push']:>19.2f} "
              f"{r['steal']:>7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4, help="bursts of `concurrency` pushes per scenario")
    parser.add_argument("--bot-delay", type=float, default=2.0, help="seconds the slow bot takes per message")
    parser.add_argument("--postgres", action="store_true", help="the gateway on a throwaway PostgreSQL cluster")
    args = parser.parse_args()
    with postgres() if args.postgres else contextlib.nullcontext(None) as pg_url:
        print(f"gateway: {'PostgreSQL' if pg_url else 'SQLite'}, HOTLINE_BOT_CONCURRENCY and HOTLINE_ANSWER_CONCURRENCY "
              f"{os.environ.get('HOTLINE_BOT_CONCURRENCY', 'default')}/{os.environ.get('HOTLINE_ANSWER_CONCURRENCY', 'default')}")
        asyncio.run(run(args.concurrency, args.rounds, args.bot_delay, pg_url))


if __name__ == "__main__":
    main()
