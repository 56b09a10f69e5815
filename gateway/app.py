"""The aiohttp application factory; resources live in cleanup contexts so start and stop mirror."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import func, select

from channels.base import Channel, ChannelContext
from channels.sms import SmsChannel
from channels.web import WebChannel
from channels.wechat import WeChatChannel
from common.messages import NOT_KEPT_RETRY_AFTER_S, NOT_KEPT_TEXT, NotKept, Reply
from gateway import api, events_api
from gateway.answering import Answering
from gateway.bot_client import RasaClient, use_tracker_key
from gateway.config import Settings
from gateway.console import Console
from gateway.coordination import make_coordinator
from gateway.http import json_error
from gateway.intake import GatewayIntake
from gateway.metrics import METRICS, Metrics
from gateway.outbox import SENDERS, UNSENT, OutboxWorker
from gateway.policies import HeldReplyFallback
from gateway.router import Notify, Router
from gateway.schema import migrate
from handoff.notify import CHANNEL as TICKET_WEBHOOK
from handoff.notify import TicketWebhookSender
from handoff.survey import SurveyService
from handoff.survey_sms import SurveySmsPolicy
from profiles import load as load_profile
from storage.base import utcnow
from storage.conversations import Message
from storage.db import UnitOfWork, make_engine, make_sessions
from storage.outbox import OutboxItem

log = logging.getLogger(__name__)
SETTINGS = web.AppKey("settings", Settings)
ROUTER = web.AppKey("router", Router)
OUTBOX = web.AppKey("outbox_worker", OutboxWorker)
QUEUE_SWEEP_S = 15.0  # how often waiting citizens are checked for a callback order
HTTP = web.AppKey("http", aiohttp.ClientSession)


@web.middleware
async def errors_middleware(request: web.Request, handler):  # noqa: ANN001, ANN201 - aiohttp's signature
    """No citizen or provider ever sees a stack trace; every failure is logged with the path. A
    message that was not committed gets 503 with Retry-After, never a claim that it was kept."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except NotKept:  # logged where it happened; the provider (or page) sends it again
        response = json_error(503, NOT_KEPT_TEXT)
        response.headers["Retry-After"] = str(NOT_KEPT_RETRY_AFTER_S)
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(503, "internal error")


async def healthz(request: web.Request) -> web.Response:
    """Each part the gateway depends on. 503 when messages cannot be kept (database, or Redis when
    configured): a load balancer should send citizens elsewhere. With the bot down it is 200,
    "degraded": messages are kept and wait (`waiting_for_bot`) until it answers again."""
    router, settings = request.app[ROUTER], request.app[SETTINGS]
    http = request.app[HTTP]
    parts: dict[str, Any] = {}
    try:
        async with router.sessions() as session:
            parts["waiting_for_bot"] = await session.scalar(
                select(func.count()).select_from(Message).where(Message.status == "pending_bot"))
            parts["outbox_backlog"] = await session.scalar(
                select(func.count()).select_from(OutboxItem).where(OutboxItem.status.in_(UNSENT)))
        parts["database"] = "up"
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the probe must answer
        log.warning("healthz: database %s", type(exc).__name__)
        parts["database"] = "down"
    if settings.redis_url:
        try:
            await router.coordinator.seen("healthz")
            parts["redis"] = "up"
        except Exception as exc:  # noqa: BLE001
            log.warning("healthz: redis %s", type(exc).__name__)
            parts["redis"] = "down"
    rasa = await router.bot.health()
    parts["rasa"] = ["up" if up else "down" for up in rasa]
    parts["bot"] = "up" if any(rasa) else "down"
    if settings.action_url:
        parts["action_server"] = "up" if await _answers(http, f"{settings.action_url}/health") else "down"
    keeping = parts["database"] == "up" and parts.get("redis", "up") == "up"
    bot_ok = all(rasa) and parts.get("action_server", "up") == "up"
    status = "ok" if keeping and bot_ok else "degraded" if keeping else "down"
    return web.json_response({"status": status, **parts}, status=200 if keeping else 503)


async def _answers(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def make_channels(settings: Settings) -> tuple[WebChannel, WeChatChannel, SmsChannel]:
    """Every channel, not yet started. WeChat reads its apps now: a bad configuration stops the start."""
    return WebChannel(settings.max_body_bytes), WeChatChannel(settings), SmsChannel(settings)


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], dt.datetime] = utcnow, background: bool = True
) -> web.Application:
    """`clock`: the one time the survey timers, the outbox and the SMS records read (operators'
    `hotline surveys tick --at`, tests). `background=False`: no timer, outbox or retry loops; the
    caller drives them."""
    settings = settings or Settings.from_env()
    profile = load_profile(settings.profile)
    if settings.ticket_webhook_url and not settings.ticket_callback_secret:
        raise ValueError("HOTLINE_TICKET_WEBHOOK_URL needs HOTLINE_TICKET_CALLBACK_SECRET to sign with")
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[errors_middleware])
    app[SETTINGS] = settings
    use_tracker_key(settings.tracker_key())
    app[METRICS] = metrics = Metrics()
    web_channel, wechat, sms = make_channels(settings)
    channels: tuple[Channel, ...] = (web_channel, wechat, sms)
    console = Console(settings.max_body_bytes, settings.trusted_proxies, settings.console_seen_s)
    if not settings.console_secret:
        log.warning("HOTLINE_CONSOLE_SECRET is not set: console logins last until this process restarts "
                    "and hold on this replica only")

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        sessions = make_sessions(engine)
        transact = UnitOfWork(sessions)
        app[HTTP] = http = aiohttp.ClientSession()
        coordinator = make_coordinator(settings.redis_url)
        app[SENDERS] = senders = {}
        worker = OutboxWorker(sessions, senders, transact=transact, metrics=metrics, clock=clock)
        app[OUTBOX] = worker
        router = Router(
            sessions,
            RasaClient(settings.rasa_url, http, settings.bot_timeout_s, settings.bot_concurrency, settings.rasa_token),
            coordinator,
            profile,
            max_text_chars=settings.max_text_chars,
            transact=transact,
            metrics=metrics,
            outbox_channels=set().union(*(channel.outbox_channels() for channel in channels)),
            notify=_push_through(channels),
            on_enqueued=worker.wake,
            clock=clock,
        )
        app[ROUTER] = router
        console.start(sessions, router.bot, router.notify, router.outbox_channels, worker.wake, router.waiting, metrics,
                      wechat.allowance)
        router.to_agent = console.citizen_wrote
        await console.fan_out_through(settings.redis_url)
        answering = Answering(router, settings.answer_concurrency)
        surveys = SurveyService(sessions, profile, clock=clock, on_enqueued=worker.wake,
                                webhook_url=settings.ticket_webhook_url)
        context = ChannelContext(GatewayIntake(router, answering), sessions, http, coordinator, settings, profile,
                                 outbox_max_attempts=worker.max_attempts)
        await web_channel.start(context)
        await wechat.start(context, undeliverable=HeldReplyFallback(sessions, profile))
        await sms.start(context, policy=SurveySmsPolicy(surveys))
        for channel in channels:
            senders.update(channel.senders())
        webhook_http = None
        if settings.ticket_webhook_url:
            webhook_http = aiohttp.ClientSession()
            senders[TICKET_WEBHOOK] = TicketWebhookSender(webhook_http, settings.ticket_callback_secret)
        api.setup_runtime(app, sessions, settings.api_token)
        events_api.setup_runtime(app, surveys, settings.ticket_callback_secret, settings.ticket_callback_window_s)
        survey_timers = [asyncio.create_task(_survey_loop(surveys, settings.survey_interval_s)),
                         asyncio.create_task(_queue_loop(router, QUEUE_SWEEP_S))] if background else []
        tasks = [
            asyncio.create_task(_retry_loop(router, settings.retry_interval_s)),
            asyncio.create_task(worker.run(settings.outbox_interval_s)),
        ] if background else []
        yield
        await answering.close()
        for batch in (tasks, survey_timers):  # survey timers last: a pass under way gets longer to finish
            for task in batch:
                task.cancel()
            for task in batch:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await console.stop()
        for channel in channels:
            await channel.stop()
        if webhook_http is not None:
            await webhook_http.close()
        await http.close()
        await coordinator.close()
        transact.close()
        await engine.dispose()

    app.cleanup_ctx.append(resources)
    for channel in channels:
        channel.add_routes(app)
    console.add_routes(app, settings.console_secret, settings.console_secure_cookie)
    api.add_routes(app)
    events_api.add_routes(app)
    app.router.add_get("/healthz", healthz)
    return app


def _push_through(channels: tuple[Channel, ...]) -> Notify:
    """Replies produced later (the bot came back) go to whichever channel can push them now."""

    async def notify(channel: str, sender_id: str, replies: list[Reply]) -> bool:
        for candidate in channels:
            if await candidate.push(channel, sender_id, replies):
                return True
        return False

    return notify


async def _survey_loop(surveys: SurveyService, interval_s: float) -> None:
    """Survey timers (send what is due, default what expired, flag what is overdue) on every replica."""
    while True:
        try:
            counts = await surveys.tick()
            if any(counts.values()):
                log.info("surveys: %d sent, %d defaulted, %d overdue", counts["sent"], counts["defaulted"],
                         counts["overdue"])
        except Exception as exc:  # no traceback text: SQL errors would carry parameters (phone numbers)
            where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            log.error("survey pass failed (%s at %s:%s); will try again", type(exc).__name__,
                      where.filename if where else "?", where.lineno if where else "?")
        await asyncio.sleep(interval_s)


async def _queue_loop(router: Router, interval_s: float) -> None:
    """Nobody waits forever: callback orders for those who can no longer be served (every replica;
    the compare-and-set on the conversation files each one once)."""
    while True:
        try:
            filed = await router.waiting.sweep()
            if filed:
                log.info("queue: %d callback orders filed", filed)
        except Exception as exc:  # noqa: BLE001 - no traceback text: SQL errors would carry parameters
            log.error("queue sweep failed (%s); will try again", type(exc).__name__)
        await asyncio.sleep(interval_s)


async def _retry_loop(router: Router, interval_s: float) -> None:
    """Messages kept while the bot was down are sent as soon as it answers again."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            sent = await router.retry_pending()
            if sent:
                log.info("delivered %d messages kept while the bot was down", sent)
        except Exception as exc:  # no traceback text: SQL errors would carry parameters
            log.error("retrying pending messages failed (%s); will try again", type(exc).__name__)
        try:  # separately: a failure above must not stop crash recovery
            recovered = await router.recover_received()
            if recovered:
                log.info("answered messages of %d conversations kept before a restart", recovered)
        except Exception as exc:  # noqa: BLE001
            log.error("recovering received messages failed (%s); will try again", type(exc).__name__)
