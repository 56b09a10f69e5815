"""`hotline` command: run the whole service, train the bot, classify texts, score the NLU."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.botproc import Part, bot_servers, exit_service, free_port
from gateway.config import ROOT, Settings

# The real-letter dev set lives beside the repository (evaluation data, never committed).
REAL_DEV = ROOT.parent / "shared" / "data" / "real_messages_dev.jsonl"
Parse = Callable[[str], Awaitable[dict[str, Any]]]


def cmd_run(args: argparse.Namespace) -> int:
    """The whole service on one machine: bot processes on loopback, the gateway on the public port."""
    from gateway import logs as logsetup

    logsetup.setup()
    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    base = Settings.from_env()
    if refused := _refusal(base):
        return refused
    token = base.rasa_token or secrets.token_urlsafe(24)
    gave_up: list[str] = []

    def give_up(part: Part) -> None:
        gave_up.append(part.name)
        exit_service(part)

    # Rasa's trackers in memory: a SQL store on SQLite ran its queries inside Rasa's event loop, a third of
    # Rasa's CPU per turn (docs/benchmarks.md); what a restart loses is in docs/operations.md.
    with bot_servers(args.rasa_port, args.action_port, None, var, token, supervise=give_up,
                     max_restarts=args.max_restarts) as rasa_url:
        settings = Settings(**{**base.__dict__, "rasa_url": rasa_url, "rasa_token": token,
                               "action_url": f"http://127.0.0.1:{args.action_port}"})
        print(
            f"\n  chat page     http://127.0.0.1:{settings.port}/\n"
            f"  REST webhook  http://127.0.0.1:{settings.port}/webhooks/rest/webhook\n"
            f"  work orders   http://127.0.0.1:{settings.port}/api/tickets/<number>  (Bearer $HOTLINE_API_TOKEN)\n"
            f"  Rasa (local)  {rasa_url}   logs: var/rasa.log, var/actions.log\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        serve_gateway(settings, print=None)
    if gave_up:
        print(f"hotline run: {gave_up[0]} kept dying (see var/*.log); stopped", file=sys.stderr)
        return 1
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
    settings = Settings.from_env()
    if refused := _refusal(settings):
        return refused
    serve_gateway(settings)
    return 0


def _refusal(settings: Settings) -> int:
    """2 with a one-line reason when the settings would open the data to the network; else 0."""
    reason = settings.insecure_reason()
    if reason:
        print(f"hotline: {reason}", file=sys.stderr)
        return 2
    return 0


def _database_command(
    work: Callable[[Any], Awaitable[int]], name: str = "", errors: tuple[type[Exception], ...] = ()
) -> int:
    """Run `work(sessions)` on the configured, migrated database (operator commands); an error an
    operator can correct (`errors`) is printed as `hotline NAME: …` with exit code 2."""
    from gateway.schema import migrate
    from storage.db import make_engine, make_sessions

    async def go() -> int:
        url = Settings.from_env().database_url
        await migrate(url)
        engine = make_engine(url)
        try:
            return await work(make_sessions(engine))
        except errors as exc:
            print(f"hotline {name}: {exc}", file=sys.stderr)
            return 2
        finally:
            await engine.dispose()

    return asyncio.run(go())


def cmd_retention(args: argparse.Namespace) -> int:
    """Anonymise or delete what is past the profile's windows, as of now or --at; prints what went."""
    import datetime as dt

    from gateway import retention
    from gateway.app import make_channels
    from profiles import load

    settings = Settings.from_env()
    at = dt.datetime.fromisoformat(args.at) if args.at else dt.datetime.now(dt.UTC)
    if at.tzinfo is None:
        print("hotline retention: --at needs an offset, e.g. 2029-01-01T00:00:00+08:00", file=sys.stderr)
        return 2
    tracker_db = ROOT / "var" / "rasa_tracker.db"
    tracker_url = settings.tracker_db_url or (f"sqlite+aiosqlite:///{tracker_db}" if tracker_db.exists() else "")

    async def work(sessions: Any) -> int:
        done = await retention.run(sessions, load(settings.profile), at=at, tracker_db_url=tracker_url,
                                   forget=[channel.forget for channel in make_channels(settings)])
        print(json.dumps(done, ensure_ascii=False))
        return 0

    return _database_command(work)


def cmd_tokens(args: argparse.Namespace) -> int:
    """Named API tokens: the secret is printed once, on `add`; the database keeps its hash."""
    from gateway import tokens

    async def work(sessions: Any) -> int:
        if args.action == "add":
            secret = await tokens.add(sessions, args.name, args.scope)
            print(secret)
            print(f"token {args.name} added ({', '.join(sorted(set(args.scope)))}); it is shown only now",
                  file=sys.stderr)
        elif args.action == "revoke":
            await tokens.revoke(sessions, args.name)
            print(f"token {args.name} revoked")
        else:
            for row in await tokens.listing(sessions):
                state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                print(f"{row.name}\t{','.join(row.scopes)}\t{state}")
        return 0

    return _database_command(work, "tokens", (tokens.TokenError,))


def cmd_cluster(args: argparse.Namespace) -> int:
    """The production shape on this machine, for rehearsals and the fault matrix (docs/reliability.md)."""
    from gateway import cluster

    return cluster.main(args.gateways, args.rasa, args.actions)


def cmd_train(args: argparse.Namespace) -> int:
    from gateway import botproc

    print(botproc.ensure_model(force=args.force))
    return 0


def with_rasa(rasa_url: str | None, work: Callable[[Parse], Awaitable[int]]) -> int:
    """Run `work` with Rasa's parse: the server at `rasa_url` when one answers, else one started for the run."""
    import aiohttp

    from gateway.bot_client import RasaClient

    async def go(url: str, token: str) -> int:
        async with aiohttp.ClientSession() as http:
            return await work(RasaClient(url, http, token=token).parse)

    settings = Settings.from_env()
    url = rasa_url or settings.rasa_url
    if _reachable(url):
        return asyncio.run(go(url, settings.rasa_token))
    print(f"no Rasa server at {url}; starting one for this run (about a minute)...", file=sys.stderr)
    token = secrets.token_urlsafe(24)
    with (
        contextlib.redirect_stdout(sys.stderr),
        bot_servers(free_port(), free_port(), None, ROOT / "var", token) as started_url,
        contextlib.redirect_stdout(sys.__stdout__),
    ):
        return asyncio.run(go(started_url, token))


def cmd_classify(args: argparse.Namespace) -> int:
    """One JSON object per input line: the same model and the same screening code as the live bot."""
    from bot.evaluation import classify
    from profiles import load

    lines = [line.strip() for line in sys.stdin if line.strip()]

    async def work(parse: Parse) -> int:
        started = time.monotonic()
        for outcome in await classify(enumerate(lines), parse, load(args.profile)):
            print(json.dumps(outcome.verdict.as_json(outcome.text), ensure_ascii=False), flush=True)
        print(f"classified {len(lines)} lines in {time.monotonic() - started:.1f}s", file=sys.stderr)
        return 0

    return with_rasa(args.rasa_url, work)


def cmd_eval_real(args: argparse.Namespace) -> int:
    """The share of real citizen letters accepted, the refusal reasons and the slowest letters."""
    from bot.evaluation import classify, format_real, read_letters, real_report
    from profiles import load

    path = Path(args.data)
    if not path.exists():
        print(f"error: {path} not found (the real-letter dev set; set HOTLINE_REAL_DEV or --data)", file=sys.stderr)
        return 2
    letters = read_letters(path, args.sample)

    async def work(parse: Parse) -> int:
        started = time.monotonic()
        outcomes = await classify(letters, parse, load(args.profile))
        elapsed = time.monotonic() - started
        report = real_report(outcomes)
        print(format_real(report, outcomes, refused=args.show_refused))
        print(f"  {len(letters)} letters in {elapsed:.1f}s; floor {args.min_accepted:.0%} accepted")
        if args.out:
            rows = (json.dumps({"id": o.key, **o.verdict.as_json(o.text)}, ensure_ascii=False) for o in outcomes)
            Path(args.out).write_text("".join(f"{row}\n" for row in rows), encoding="utf-8")  # noqa: ASYNC240
        return 0 if report.share >= args.min_accepted else 1

    return with_rasa(args.rasa_url, work)


def cmd_eval_heldout(args: argparse.Namespace) -> int:
    """Request-kind macro-F1, emergencies referred and wrongful refusals on the held-out split."""
    from bot.evaluation import classify, format_heldout, heldout_report, read_heldout
    from profiles import load

    pairs = read_heldout(ROOT / "nlu_data" / "test")
    profile = load(args.profile)

    async def work(parse: Parse) -> int:
        outcomes = await classify(((intent, text) for intent, text in pairs), parse, profile)
        report = heldout_report([intent for intent, _ in pairs], outcomes, profile)
        print(format_heldout(report, args.show_misses))
        ok = (
            report.macro_f1 >= args.min_f1
            and report.emergencies_referred == report.emergencies
            and report.wrongful_refusal_rate <= args.max_wrongful
        )
        return 0 if ok else 1

    return with_rasa(args.rasa_url, work)


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


def cmd_retry_failed(args: argparse.Namespace) -> int:
    """Messages set aside as failed (hotline_failed_messages_total) are answered again by the
    running gateway's next recovery pass."""
    from gateway.router import requeue_failed
    from gateway.schema import migrate
    from storage.db import make_engine, make_sessions

    async def requeue() -> int:
        url = Settings.from_env().database_url
        await migrate(url)  # as the gateway does at start: a new database has the tables too
        engine = make_engine(url)
        try:
            return await requeue_failed(make_sessions(engine))
        finally:
            await engine.dispose()

    print(f"{asyncio.run(requeue())} failed messages queued to be answered again")
    return 0


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


def _at(args: argparse.Namespace, what: str) -> Any:
    """--at as an aware UTC time, or None after saying why not."""
    import datetime as dt

    try:
        at = dt.datetime.fromisoformat(args.at)
    except ValueError:
        print(f"error: --at {args.at!r} is not an ISO time", file=sys.stderr)
        return None
    if at.tzinfo is None:
        print("error: --at needs a UTC offset, e.g. 2026-11-28T10:00:00+08:00", file=sys.stderr)
        return None
    at = at.astimezone(dt.UTC)
    if at > dt.datetime.now(dt.UTC) and not args.ahead:
        print(f"error: {args.at} is in the future: {what}; add --ahead to mean it", file=sys.stderr)
        return None
    return at


def cmd_surveys_tick(args: argparse.Namespace) -> int:
    """Due survey work as of --at (send, default, flag overdue), then deliver what it queued."""
    at = _at(args, "surveys would go out early")
    if at is None:
        return 2
    print(json.dumps(asyncio.run(_tick_at(Settings.from_env(), at))))
    return 0


def cmd_agents_sweep(args: argparse.Namespace) -> int:
    """The queue's sweep as of --at (callback orders for whoever can no longer be served), then
    deliver the notices it queued."""
    at = _at(args, "citizens would get callback orders early")
    if at is None:
        return 2
    print(json.dumps(asyncio.run(_tick_at(Settings.from_env(), at, queue=True))))
    return 0


async def _tick_at(settings: Settings, at: Any, *, queue: bool = False) -> dict[str, Any]:
    from aiohttp import web

    from gateway.app import OUTBOX, ROUTER, create_app
    from gateway.events_api import SURVEYS

    app = create_app(settings, clock=lambda: at, background=False)
    runner = web.AppRunner(app)
    await runner.setup()  # storage, channels and senders, no loops: this command is the only pass
    try:
        counts = {"callbacks": await app[ROUTER].waiting.sweep()} if queue else await app[SURVEYS].tick()
        delivered = 0
        while passed := await app[OUTBOX].deliver_due():
            delivered += passed
        return {"at": at.isoformat(), **counts, "delivered": delivered}
    finally:
        await runner.cleanup()


def cmd_agents(args: argparse.Namespace) -> int:
    """Agent accounts. The password comes from stdin (never an argument: it would sit in the shell
    history and in `ps`); each change is in the audit log."""
    from handoff import agents

    async def work(sessions: Any) -> int:
        if args.action == "add":
            if sys.stdin.isatty():
                import getpass

                password = getpass.getpass(f"password for {args.name}: ")
            else:
                password = sys.stdin.readline().rstrip("\n")
            await agents.add(sessions, args.name, password, args.role)
            print(f"agent {args.name} added ({args.role})")
        elif args.action == "disable":
            await agents.disable(sessions, args.name)
            print(f"agent {args.name} disabled")
        else:
            for agent in await agents.listing(sessions):
                print(f"{agent.name}\t{agent.role}\t{'active' if agent.active else 'disabled'}")
        return 0

    return _database_command(work, "agents", (agents.AgentError,))


def _as_of(command: argparse.ArgumentParser) -> None:
    """The operator's clock for timer work: `--at` a time, in the future only with `--ahead`."""
    command.add_argument("--at", required=True, help="ISO time with offset, e.g. 2026-11-28T10:00:00+08:00")
    command.add_argument("--ahead", action="store_true", help="allow a time in the future (tests, rehearsals)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hotline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train if needed, start Rasa, the action server and the gateway")
    run.add_argument("--rasa-port", type=int, default=5005)
    run.add_argument("--action-port", type=int, default=5055)
    run.add_argument("--max-restarts", type=int, default=5,
                     help="restarts in a row of a dying bot process before the service stops with exit code 1")
    run.set_defaults(func=cmd_run)
    sub.add_parser("serve", help="the gateway only (Rasa at HOTLINE_RASA_URL)").set_defaults(func=cmd_serve)
    cluster = sub.add_parser("cluster", help="gateway replicas, Rasa servers, redis and PostgreSQL on loopback")
    cluster.add_argument("--gateways", type=int, default=2)
    cluster.add_argument("--rasa", type=int, default=2)
    cluster.add_argument("--actions", type=int, default=1,
                         help="action server worker processes, all on one port (Rasa names one action endpoint)")
    cluster.set_defaults(func=cmd_cluster)
    train = sub.add_parser("train", help="train the bot model if the training data changed")
    train.add_argument("--force", action="store_true")
    train.set_defaults(func=cmd_train)
    classify = sub.add_parser("classify", help="classify stdin lines, one JSON object per line")
    classify.add_argument("--profile", default="jiyuan")
    classify.add_argument("--rasa-url", default=None, help="a running Rasa server (default HOTLINE_RASA_URL)")
    classify.set_defaults(func=cmd_classify)
    real = sub.add_parser("eval-real", help="accepted share and refusal reasons on real citizen letters")
    real.add_argument("--profile", default="jiyuan")
    real.add_argument("--data", default=os.environ.get("HOTLINE_REAL_DEV", str(REAL_DEV)))
    real.add_argument("--sample", type=int, default=None, help="a fixed subset of this many letters")
    real.add_argument("--min-accepted", type=float, default=0.95)
    real.add_argument("--show-refused", type=int, default=0, help="print this many refused letters")
    real.add_argument("--out", default=None, help="write every letter's verdict here (JSON lines)")
    real.add_argument("--rasa-url", default=None)
    real.set_defaults(func=cmd_eval_real)
    held = sub.add_parser("eval-heldout", help="the held-out split through screening, as citizens get it")
    held.add_argument("--profile", default="jiyuan")
    held.add_argument("--min-f1", type=float, default=0.95)
    held.add_argument("--max-wrongful", type=float, default=0.02)
    held.add_argument("--show-misses", type=int, default=20)
    held.add_argument("--rasa-url", default=None)
    held.set_defaults(func=cmd_eval_heldout)
    nlu = sub.add_parser("nlu-eval", help="score the held-out NLU split with rasa test nlu")
    nlu.add_argument("--min-f1", type=float, default=0.85)
    nlu.set_defaults(func=cmd_nlu_eval)
    sub.add_parser("retry-failed", help="answer again the messages set aside as failed").set_defaults(
        func=cmd_retry_failed)
    sub.add_parser("profiles", help="list the jurisdiction profiles").set_defaults(func=cmd_profiles)
    profile = sub.add_parser("profile", help="one jurisdiction profile").add_subparsers(dest="action", required=True)
    show = profile.add_parser("show", help="print a profile's rules in readable Chinese")
    show.add_argument("name")
    show.set_defaults(func=cmd_profile_show)
    surveys = sub.add_parser("surveys", help="the satisfaction surveys").add_subparsers(dest="action", required=True)
    _as_of(surveys.add_parser("tick", help="run due survey work as of a time, then deliver its SMS"))
    surveys.choices["tick"].set_defaults(func=cmd_surveys_tick)
    agents = sub.add_parser("agents", help="human agents' accounts").add_subparsers(dest="action", required=True)
    add = agents.add_parser("add", help="add an agent; the password is read from stdin")
    add.add_argument("name")
    add.add_argument("--role", choices=("agent", "supervisor"), default="agent")
    agents.add_parser("list", help="list agents")
    disable = agents.add_parser("disable", help="disable an agent (their session stops at once)")
    disable.add_argument("name")
    for command in (add, *agents.choices.values()):
        command.set_defaults(func=cmd_agents)
    _as_of(agents.add_parser("sweep", help="file callback orders for citizens who can no longer be served, as of a time"))
    agents.choices["sweep"].set_defaults(func=cmd_agents_sweep)
    from gateway.tokens import SCOPES

    tokens = sub.add_parser("tokens", help="named API tokens with scopes").add_subparsers(dest="action", required=True)
    token_add = tokens.add_parser("add", help="make a token (printed once) for a handling unit or operator")
    token_add.add_argument("name")
    token_add.add_argument("--scope", action="append", required=True, choices=sorted(SCOPES),
                           help="repeat for several: " + "; ".join(f"{k}: {v}" for k, v in SCOPES.items()))
    tokens.add_parser("list", help="list tokens (names and scopes, never the secrets)")
    revoke = tokens.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("name")
    for command in tokens.choices.values():
        command.set_defaults(func=cmd_tokens)
    keep = sub.add_parser("retention", help="what is kept how long").add_subparsers(dest="action", required=True)
    keep_run = keep.add_parser("run", help="anonymise or delete what is past the profile's windows (audited)")
    keep_run.add_argument("--at", default=None, help="ISO time with offset to run as of (default: now)")
    keep_run.set_defaults(func=cmd_retention)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        return int(args.func(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
