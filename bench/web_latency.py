"""End-to-end web messages/s and p50/p99 latency through the gateway, side by side with Rasa's own
REST webhook, at 1, 10 and 50 concurrent conversations; then the RSS of every process.

    .venv/bin/python -m bench.web_latency [--levels 1 10 50] [--conversations 60] [--bot-concurrency 4] [--postgres]

The gateway is its own process (`hotline serve` on SQLite, or with --postgres on a throwaway
PostgreSQL cluster, as deployed); this process is only the
client. Each conversation sends the same realistic turns (a complaint, the phone, anonymity,
confirmation) to both targets, so the ratio is the gateway's overhead (storage, dedupe, routing,
payload handling, work orders) over Rasa. The two targets take turns chunk by chunk (a chunk is
`concurrency` conversations at once), so slow phases of the machine hit both alike. Each level runs
at least 60 conversations (240 messages) per target: with 80, the p99 was the single slowest message,
and one slow Rasa answer moved the ratio by half.

Two further views per level, less noisy than a ratio of two p50s (each message type takes 55-330 ms
in Rasa, so the overall p50 falls between types and moves in steps):
- paired: the median over messages of (through the gateway - straight to Rasa) for the same turn of
  the two conversations that ran next to each other;
- inside: the gateway's own account from its /metrics, per message, of its turn less the bot's part.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.postgres import postgres
from gateway.botproc import bot_servers, free_port
from gateway.config import ROOT

TOKEN = "bench-token"
TURNS = [
    "投诉天坛路有家饭店每天晚上把油烟直接排到居民楼，已经持续一个月了",
    "{phone}",  # each conversation is another citizen: one phone would make every order a repeat of the first
    "匿名",
    "/affirm",
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def conversation(
    http: aiohttp.ClientSession, url: str, gateway: bool, turns: Sequence[str] = TURNS
) -> list[float]:
    """Each turn's latency in seconds, in turn order."""
    sender = f"bench-{uuid.uuid4().hex[:10]}"
    phone = f"138{random.randrange(10**8):08d}"
    latencies = []
    for i, text in enumerate(turns):
        body: dict[str, object] = {"sender": sender, "message": text.format(phone=phone)}
        if gateway:
            body["message_id"] = f"{sender}-{i}"
        started = time.perf_counter()
        async with http.post(url, json=body) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        latencies.append(time.perf_counter() - started)
    return latencies


class Side:
    """One target's samples over all its chunks."""

    def __init__(self, url: str, gateway: bool, turns: Sequence[str] = TURNS) -> None:
        self.url, self.gateway, self.turns = url, gateway, turns
        self.latencies: list[float] = []
        self.by_turn: list[list[float]] = [[] for _ in turns]
        self.conversations: list[list[float]] = []  # in the order they ran, for pairing with the other side
        self.busy_s = 0.0

    async def chunk(self, http: aiohttp.ClientSession, concurrency: int) -> None:
        started = time.perf_counter()
        results = await asyncio.gather(*(conversation(http, self.url, self.gateway, self.turns)
                                         for _ in range(concurrency)))
        self.busy_s += time.perf_counter() - started
        self.latencies += [x for r in results for x in r]
        self.conversations += results
        for r in results:
            for turn, x in enumerate(r):
                self.by_turn[turn].append(x)

    def row(self) -> dict[str, float]:
        return {
            "msgs_per_s": len(self.latencies) / self.busy_s,
            "p50_ms": statistics.median(self.latencies) * 1000,
            "p99_ms": percentile(self.latencies, 0.99) * 1000,
            "n": len(self.latencies),
            "mean_ms": statistics.mean(self.latencies) * 1000,
            "turn_p50_ms": [statistics.median(t) * 1000 for t in self.by_turn],
        }


async def turn_totals(http: aiohttp.ClientSession, gateway_url: str) -> dict[str, float]:
    """The gateway's own account of its web turns (/metrics): count, total seconds, and the bot's part."""
    metrics_url = gateway_url.split("/webhooks/")[0] + "/metrics"
    async with http.get(metrics_url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        text = await resp.text()
    wanted = {"hotline_turn_seconds_count": "turns", "hotline_turn_seconds_sum": "turn_s", "hotline_bot_seconds_sum": "bot_s"}
    totals = dict.fromkeys(wanted.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted and sample.labels.get("channel", "web") == "web":
                totals[wanted[sample.name]] += sample.value
    return totals


async def level(rasa_url: str, gateway_url: str, concurrency: int, chunks: int) -> tuple[dict, dict]:
    direct, via = Side(f"{rasa_url}/webhooks/rest/webhook", False), Side(gateway_url, True)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        before = await turn_totals(http, gateway_url)
        for _ in range(chunks):
            await direct.chunk(http, concurrency)
            await via.chunk(http, concurrency)
        after = await turn_totals(http, gateway_url)
    turns = after["turns"] - before["turns"]
    via_row = via.row() | {
        # Inside the gateway, per message: its own work (the turn less the bot's part), and the bot's
        # part as the gateway saw it (Rasa's time plus our HTTP client's hop and the bot gate).
        "own_ms": ((after["turn_s"] - before["turn_s"]) - (after["bot_s"] - before["bot_s"])) / turns * 1000,
        "bot_ms": (after["bot_s"] - before["bot_s"]) / turns * 1000,
    }
    # Paired: the k-th conversation on each side ran next to each other in time, turn by turn the same
    # text, so their difference is the gateway's part without the spread between turn types.
    diffs = [v - d for dc, vc in zip(direct.conversations, via.conversations, strict=True)
             for d, v in zip(dc, vc, strict=True)]
    via_row["paired_added_ms"] = statistics.median(diffs) * 1000
    return direct.row(), via_row


async def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {proc.returncode}")
            try:
                async with http.get(url) as resp:
                    if resp.status == 200 and (await resp.json())["bot"] == "up":
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError("the gateway did not start in 60 s")


async def run(levels: list[int], chunks: int, conversations: int, rasa_url: str, gateway_url: str) -> None:
    """The issue's ratios of p50 and p99, then two views that a mix of turn types cannot distort: the
    ratio of means, and per turn the p50 the gateway adds (a turn takes 55-200 ms in Rasa, so the
    overall p50 falls in a gap between turn types and moves in steps)."""
    # Warm both paths (TensorFlow's first calls are slow).
    await level(rasa_url, gateway_url, 1, 2)
    print(f"{'conc':>4} {'msgs':>5} | {'rasa msg/s':>10} {'p50 ms':>8} {'p99 ms':>8} | {'gateway msg/s':>13} "
          f"{'p50 ms':>8} {'p99 ms':>8} | {'p50 ratio':>9} {'p99 ratio':>9}")
    for c in levels:
        direct, via = await level(rasa_url, gateway_url, c, max(chunks, -(-conversations // c)))
        print(f"{c:>4} {via['n']:>5.0f} | {direct['msgs_per_s']:>10.1f} {direct['p50_ms']:>8.1f} "
              f"{direct['p99_ms']:>8.1f} | {via['msgs_per_s']:>13.1f} {via['p50_ms']:>8.1f} {via['p99_ms']:>8.1f} | "
              f"{via['p50_ms'] / direct['p50_ms']:>9.3f} {via['p99_ms'] / direct['p99_ms']:>9.3f}", flush=True)
        added = "  ".join(f"turn {i + 1} {d:.0f}+{g - d:.1f}" for i, (d, g) in
                          enumerate(zip(direct["turn_p50_ms"], via["turn_p50_ms"], strict=True)))
        print(f"{'':>10} mean ratio {via['mean_ms'] / direct['mean_ms']:.3f}; p50 ms rasa+added by the gateway: {added}",
              flush=True)
        print(f"{'':>10} paired, message by message: the gateway adds a median {via['paired_added_ms']:.1f} ms "
              f"({via['paired_added_ms'] / direct['p50_ms']:.1%} of Rasa's p50)", flush=True)
        print(f"{'':>10} inside the gateway per message: own work {via['own_ms']:.1f} ms "
              f"({via['own_ms'] / direct['mean_ms']:.1%} of Rasa's mean {direct['mean_ms']:.0f} ms), "
              f"the bot as seen from the gateway {via['bot_ms']:.0f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--chunks", type=int, default=2, help="chunks per target and level (at least 2)")
    parser.add_argument("--conversations", type=int, default=60,
                        help="conversations per target and level, at least (60: 240 messages, so p99 is not the maximum)")
    parser.add_argument("--bot-concurrency", type=int, default=4, help="HOTLINE_BOT_CONCURRENCY of the gateway")
    parser.add_argument("--postgres", action="store_true", help="the gateway on a throwaway PostgreSQL cluster")
    args = parser.parse_args()
    with postgres() if args.postgres else contextlib.nullcontext(None) as pg_url:
        bench(args, pg_url)


# The bench client is one address standing in for many citizens: the per-address limit is off.
NO_ADDRESS_LIMIT = {"HOTLINE_WEB_ADDRESS_PER_MINUTE": "0"}


@contextlib.contextmanager
def gateway_process(
    rasa_url: str, database_url: str, bot_concurrency: int, logs: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The gateway as deployed (`hotline serve`, its own process) in front of `rasa_url`, and its
    REST webhook's URL; this process stays the client only."""
    port = free_port()
    env = os.environ | {
        "HOTLINE_DATABASE_URL": database_url, "HOTLINE_RASA_URL": rasa_url,
        "HOTLINE_HOST": "127.0.0.1", "HOTLINE_PORT": str(port),
        "HOTLINE_BOT_CONCURRENCY": str(bot_concurrency), "HOTLINE_API_TOKEN": TOKEN,
        **NO_ADDRESS_LIMIT,
    }
    with (logs / "bench-gateway.log").open("wb") as log:
        gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            asyncio.run(wait_up(f"http://127.0.0.1:{port}/healthz", gateway))
            yield gateway, f"http://127.0.0.1:{port}/webhooks/rest/webhook"
        finally:
            gateway.terminate()
            gateway.wait()


def print_rss(gateway: subprocess.Popen[bytes], rasa_ports: Sequence[int], action_port: int) -> float:
    """Every process's RSS in MB; returns the set-up's total (gateway, Rasa servers, action server)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    print("\nRSS after the run:")
    total = rss_mb(gateway.pid)
    print(f"  gateway         {total:8.0f} MB")
    print(f"  bench client    {rss_mb(os.getpid()):8.0f} MB")
    for line in out.splitlines():
        pid, _, cmd = line.strip().partition(" ")
        if any(f"-p {port} " in f"{cmd} " for port in rasa_ports):
            total += (mb := rss_mb(int(pid)))
            print(f"  rasa server     {mb:8.0f} MB")
        elif f"--port {action_port}" in cmd:
            total += (mb := rss_mb(int(pid)))
            print(f"  action server   {mb:8.0f} MB")
    print(f"  set-up total    {total:8.0f} MB")
    return total


def bench(args: argparse.Namespace, pg_url: str | None) -> None:
    logs = ROOT / "var" / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    rasa_port, action_port = free_port(), free_port()
    with (
        bot_servers(rasa_port, action_port, None, logs) as rasa_url,
        gateway_process(rasa_url, pg_url or f"sqlite+aiosqlite:///{tmp / 'bench.db'}", args.bot_concurrency, logs) as (gateway, gateway_url),
    ):
        print(f"gateway: separate process, {'PostgreSQL' if pg_url else 'SQLite'}, "
              f"HOTLINE_BOT_CONCURRENCY={args.bot_concurrency}")
        asyncio.run(run(args.levels, args.chunks, args.conversations, rasa_url, gateway_url))
        print_rss(gateway, [rasa_port], action_port)


if __name__ == "__main__":
    main()
