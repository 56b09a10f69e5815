"""A bot turn against a default-style Rasa bot's, side by side in one run.

    .venv/bin/python -m bench.turns [--levels 1 10 50] [--conversations 60] [--rasa N]

The reference is what `rasa init` would give a Chinese hotline (bench/reference_bot: JiebaTokenizer,
word and character 1-3-gram counts, DIET 100 epochs, Memoization + Rule + TED policies, in-memory
tracker, no custom actions), trained once per content and cached beside our model. Against it runs
the whole intake through our gateway (`hotline serve`, its own process, SQLite), our Rasa and our
action server, as `hotline run` sets them up. The two take turns chunk by chunk at each level, so a
slow phase of a shared machine hits both alike; the ratio (ours ÷ the reference) is the figure.

- first turns: a new citizen's first message (ours: screening, the intake form opens, a question);
- whole conversations: four turns each (ours: complaint, phone, 匿名, confirm → a work order;
  the reference: greet, complaint, thanks, goodbye).

`--rasa N` runs ours as the production shape instead (gateway.cluster: N Rasa servers sharing
a PostgreSQL tracker store and Rasa's RedisLockStore, one action server with `--actions` worker
processes, the gateway on PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from bench.web_latency import NO_ADDRESS_LIMIT, TURNS, Side, gateway_process, print_rss, rss_mb
from gateway import botproc
from gateway.config import ROOT

REFERENCE = ROOT / "bench" / "reference_bot"
FIRST = TURNS[:1]
REFERENCE_TURNS = ["你好", TURNS[0], "谢谢", "再见"]


def reference_model() -> Path:
    """The reference bot's model, trained once per content of bench/reference_bot (cached beside ours)."""
    digest = hashlib.sha256()
    for path in sorted([REFERENCE / "config.yml", REFERENCE / "domain.yml", *(REFERENCE / "data").glob("*.yml")]):
        digest.update(str(path.relative_to(REFERENCE)).encode())
        digest.update(path.read_bytes())
    target = botproc.CACHE / f"reference-{digest.hexdigest()[:16]}.tar.gz"
    if not target.exists():
        print(f"reference bot: training {target.name} (a few minutes)", file=sys.stderr, flush=True)
        cmd = [
            str(botproc.bot_bin("rasa")), "train", "--config", str(REFERENCE / "config.yml"),
            "--domain", str(REFERENCE / "domain.yml"), "--data", str(REFERENCE / "data"),
            "--out", str(botproc.CACHE), "--fixed-model-name", target.name.removesuffix(".tar.gz"),
        ]
        if subprocess.run(cmd, cwd=ROOT, env=botproc.bot_env(), stdout=sys.stderr).returncode or not target.exists():
            raise botproc.BotSetupError("training the reference bot failed")
    return target


@contextlib.contextmanager
def reference_server(logs: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Stock `rasa run` of the reference model: no endpoints, so an in-memory tracker."""
    model, port = reference_model(), botproc.free_port()
    with (logs / "reference.log").open("ab") as out:
        proc = subprocess.Popen(
            [str(botproc.bot_bin("rasa")), "run", "-m", str(model), "-i", "127.0.0.1", "-p", str(port)],
            cwd=ROOT, env=botproc.bot_env(), stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            botproc.wait_http(f"http://127.0.0.1:{port}/", 300, proc)
            yield proc, f"http://127.0.0.1:{port}/webhooks/rest/webhook"
        finally:
            botproc.stop(proc)


async def compare(reference_url: str, gateway_url: str, levels: list[int], conversations: int) -> list[dict]:
    rows = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for kind, ref_turns, our_turns in (("first", FIRST, FIRST), ("whole", REFERENCE_TURNS, TURNS)):
            warm_ref, warm_ours = Side(reference_url, False, ref_turns), Side(gateway_url, True, our_turns)
            await warm_ref.chunk(http, 2)
            await warm_ours.chunk(http, 2)
            for c in levels:
                # First turns are one message each: four times the conversations for as many messages.
                chunks = max(2, -(-conversations * (4 if kind == "first" else 1) // c))
                ref, ours = Side(reference_url, False, ref_turns), Side(gateway_url, True, our_turns)
                for _ in range(chunks):
                    await ref.chunk(http, c)
                    await ours.chunk(http, c)
                r, o = ref.row(), ours.row()
                rows.append({"kind": kind, "conc": c, "ref": r, "ours": o})
                print(f"{kind:>5} {c:>4} {o['n']:>5.0f} | {r['msgs_per_s']:>8.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} | "
                      f"{o['msgs_per_s']:>8.1f} {o['p50_ms']:>8.1f} {o['p99_ms']:>8.1f} | "
                      f"{o['msgs_per_s'] / r['msgs_per_s']:>6.2f}", flush=True)
    return rows


HEADER = (f"{'turns':>5} {'conc':>4} {'msgs':>5} | {'ref msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} | "
          f"{'our msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} | {'ratio':>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--conversations", type=int, default=60,
                        help="whole conversations per side and level, at least (first turns: four times as many)")
    parser.add_argument("--tracker-store", choices=["postgresql", "redis"], default="postgresql",
                        help="Rasa's shared tracker store with --rasa")
    parser.add_argument("--bot-concurrency", type=int, default=4, help="HOTLINE_BOT_CONCURRENCY of the gateway, per Rasa")
    parser.add_argument("--actions", type=int, default=1,
                        help="action server worker processes with --rasa (one port: rasa_sdk's Sanic workers)")
    parser.add_argument("--rasa", type=int, default=0,
                        help="N Rasa servers in the production shape (gateway.cluster); 0: the default set-up")
    args = parser.parse_args()
    logs = ROOT / "var" / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    with reference_server(logs) as (reference, reference_url):
        if args.rasa:
            from gateway.cluster import start_cluster

            with start_cluster(gateways=1, rasa=args.rasa, actions=args.actions, logs=logs / "cluster",
                               tracker_store=args.tracker_store,
                               HOTLINE_BOT_CONCURRENCY=str(args.bot_concurrency), **NO_ADDRESS_LIMIT) as cluster:
                print(f"ours: {args.rasa} Rasa servers ({args.tracker_store} tracker store, RedisLockStore), "
                      f"{args.actions} action worker(s), one gateway on PostgreSQL\n" + HEADER, flush=True)
                asyncio.run(compare(reference_url, f"{cluster.gateway_urls[0]}/webhooks/rest/webhook",
                                    args.levels, args.conversations))
            return
        tmp = Path(tempfile.mkdtemp(prefix="bench-turns-"))
        rasa_port, action_port = botproc.free_port(), botproc.free_port()
        with (
            botproc.bot_servers(rasa_port, action_port, None, logs) as rasa_url,  # in-memory tracker, as `hotline run`
            gateway_process(rasa_url, f"sqlite+aiosqlite:///{tmp / 'bench.db'}", args.bot_concurrency, logs)
            as (gateway, gateway_url),
        ):
            print("ours: the default set-up (`hotline run`): gateway on SQLite, one Rasa, one action server\n" + HEADER,
                  flush=True)
            asyncio.run(compare(reference_url, gateway_url, args.levels, args.conversations))
            print_rss(gateway, [rasa_port], action_port)
            print(f"  reference bot   {rss_mb(reference.pid):8.0f} MB")


if __name__ == "__main__":
    main()
