"""`hotline` command: run the whole service, train the bot, classify texts, score the NLU."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import subprocess
import sys
import time
from typing import Any

from gateway.botproc import bot_servers, free_port
from gateway.config import ROOT, Settings


def cmd_run(args: argparse.Namespace) -> int:
    """The whole service on one machine: bot processes on loopback, the gateway on the public port."""
    from gateway import logs as logsetup

    logsetup.setup()
    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    base = Settings.from_env()
    with bot_servers(args.rasa_port, args.action_port, var / "rasa_tracker.db", var) as rasa_url:
        settings = Settings(**{**base.__dict__, "rasa_url": rasa_url})
        print(
            f"\n  chat page     http://127.0.0.1:{settings.port}/\n"
            f"  REST webhook  http://127.0.0.1:{settings.port}/webhooks/rest/webhook\n"
            f"  work orders   http://127.0.0.1:{settings.port}/api/tickets/<number>  (Bearer $HOTLINE_API_TOKEN)\n"
            f"  Rasa (local)  {rasa_url}   logs: var/rasa.log, var/actions.log\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        serve_gateway(settings, print=None)
    return 0


def serve_gateway(settings: Settings, **options: Any) -> None:
    """The gateway process as deployed: uvloop (the same asyncio API on libuv, with less CPU
    per turn), the access log without query strings, and start-up objects frozen out of the
    garbage collector once the app is up."""
    import uvloop
    from aiohttp import web

    from gateway.app import create_app
    from gateway.logs import RUNNER_OPTIONS

    app = create_app(settings)
    app.on_startup.append(_freeze_startup_objects)  # runs after the app's resources are set up
    web.run_app(app, host=settings.host, port=settings.port, loop=uvloop.new_event_loop(),
                **RUNNER_OPTIONS, **options)


async def _freeze_startup_objects(_app: object) -> None:
    """What start-up built (profiles, place and holiday tables, SQLAlchemy's mappers: ~150,000 objects)
    lives as long as the process; a full collection would walk all of it with the event loop stopped.
    Frozen, collections skip it. Once per process, so here rather than in the app factory, which
    tests call for every gateway they start."""
    gc.collect()
    gc.freeze()


def cmd_serve(args: argparse.Namespace) -> int:
    """The gateway alone, for deployments where Rasa runs elsewhere (HOTLINE_RASA_URL)."""
    from gateway import logs as logsetup

    logsetup.setup()
    serve_gateway(Settings.from_env())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from gateway import botproc

    print(botproc.ensure_model(force=args.force))
    return 0


async def _classify(lines: list[str], profile_name: str, rasa_url: str) -> None:
    import aiohttp

    from bot.screening import screen
    from gateway.bot_client import RasaClient
    from profiles import load

    profile = load(profile_name)
    async with aiohttp.ClientSession() as http:
        client = RasaClient(rasa_url, http)
        sem = asyncio.Semaphore(8)

        async def one(text: str) -> dict[str, object]:
            async with sem:
                nlu = await client.parse(text[:2000])
            return screen(text, nlu, profile).as_json(text)

        for result in await asyncio.gather(*(one(t) for t in lines)):
            print(json.dumps(result, ensure_ascii=False), flush=True)


def cmd_classify(args: argparse.Namespace) -> int:
    """One JSON object per input line: the same model and the same screening code as the live bot."""
    lines = [line.strip() for line in sys.stdin if line.strip()]
    rasa_url = args.rasa_url or Settings.from_env().rasa_url
    from gateway.bot_client import RasaClient  # noqa: F401 - fail early if the gateway venv is broken

    if _reachable(rasa_url):
        asyncio.run(_classify(lines, args.profile, rasa_url))
        return 0
    print(f"no Rasa server at {rasa_url}; starting one for this run (about a minute)...", file=sys.stderr)
    with (
        contextlib.redirect_stdout(sys.stderr),
        bot_servers(free_port(), free_port(), None, ROOT / "var") as url,
        contextlib.redirect_stdout(sys.__stdout__),
    ):
        started = time.monotonic()
        asyncio.run(_classify(lines, args.profile, url))
        print(f"classified {len(lines)} lines in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def _reachable(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/status", timeout=2) as resp:  # noqa: S310 - configured URL
            return resp.status == 200
    except OSError:
        return False


def cmd_nlu_eval(args: argparse.Namespace) -> int:
    """Score the held-out split with `rasa test nlu`; fail below the macro-F1 floor."""
    from gateway import botproc

    model = botproc.ensure_model()
    out = ROOT / "results" / "nlu"
    cmd = [
        str(botproc.bot_bin("rasa")), "test", "nlu", "--model", str(model),
        "--nlu", "nlu_data/test", "--out", str(out), "--no-plot",
    ]
    subprocess.run(cmd, cwd=ROOT, env=botproc.bot_env(), check=True, stdout=subprocess.DEVNULL)
    report = json.loads((out / "intent_report.json").read_text(encoding="utf-8"))
    macro = report["macro avg"]["f1-score"]
    print(f"held-out intents: {report['macro avg']['support']} examples, accuracy {report['accuracy']:.3f}, "
          f"macro-F1 {macro:.3f} (floor {args.min_f1})")
    worst = sorted((v["f1-score"], k) for k, v in report.items() if isinstance(v, dict) and "confused_with" in v)
    for f1, intent in worst[:6]:
        print(f"  {intent:18s} F1 {f1:.3f}  confused with {report[intent]['confused_with']}")
    return 0 if macro >= args.min_f1 else 1


def cmd_profiles(args: argparse.Namespace) -> int:
    from profiles import available, load

    for name in available():
        p = load(name)
        print(f"{name:12s} {p.name}  ({p.document})")
    return 0


def cmd_profile_show(args: argparse.Namespace) -> int:
    from profiles import ProfileError, load
    from profiles.describe import describe

    try:
        print(describe(load(args.name)))
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hotline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train if needed, start Rasa, the action server and the gateway")
    run.add_argument("--rasa-port", type=int, default=5005)
    run.add_argument("--action-port", type=int, default=5055)
    run.set_defaults(func=cmd_run)
    sub.add_parser("serve", help="the gateway only (Rasa at HOTLINE_RASA_URL)").set_defaults(func=cmd_serve)
    train = sub.add_parser("train", help="train the bot model if the training data changed")
    train.add_argument("--force", action="store_true")
    train.set_defaults(func=cmd_train)
    classify = sub.add_parser("classify", help="classify stdin lines, one JSON object per line")
    classify.add_argument("--profile", default="jiyuan")
    classify.add_argument("--rasa-url", default=None, help="a running Rasa server (default HOTLINE_RASA_URL)")
    classify.set_defaults(func=cmd_classify)
    nlu = sub.add_parser("nlu-eval", help="score the held-out NLU split with rasa test nlu")
    nlu.add_argument("--min-f1", type=float, default=0.85)
    nlu.set_defaults(func=cmd_nlu_eval)
    sub.add_parser("profiles", help="list the jurisdiction profiles").set_defaults(func=cmd_profiles)
    profile = sub.add_parser("profile", help="one jurisdiction profile").add_subparsers(dest="action", required=True)
    show = profile.add_parser("show", help="print a profile's rules in readable Chinese")
    show.add_argument("name")
    show.set_defaults(func=cmd_profile_show)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        return int(args.func(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
