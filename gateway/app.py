"""The aiohttp application factory; resources live in cleanup contexts so start and stop mirror."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from channels import sms as sms_channel
from channels import web as web_channel
from channels import wechat as wechat_channel
from gateway import api, events_api
from gateway.answering import Answering
from gateway.bot_client import RasaClient
from gateway.config import Settings
from gateway.coordination import make_coordinator
from gateway.metrics import METRICS, Metrics
from gateway.outbox import SENDERS, OutboxWorker
from gateway.router import Router
from gateway.schema import migrate
from profiles import load as load_profile
from storage.db import UnitOfWork, make_engine, make_sessions

log = logging.getLogger(__name__)
SETTINGS = web.AppKey("settings", Settings)
ROUTER = web.AppKey("router", Router)
OUTBOX = web.AppKey("outbox_worker", OutboxWorker)


@web.middleware
async def errors_middleware(request: web.Request, handler):  # noqa: ANN001, ANN201 - aiohttp's signature
    """No citizen or provider ever sees a stack trace; every failure is logged with the path."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"error": "internal error; the message was kept and will be retried"}, status=503)


async def healthz(request: web.Request) -> web.Response:
    bot_ok = await request.app[ROUTER].bot.healthy()
    return web.json_response({"status": "ok", "bot": "up" if bot_ok else "down"})


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings.from_env()
    profile = load_profile(settings.profile)
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[errors_middleware])
    app[SETTINGS] = settings
    app[METRICS] = metrics = Metrics()
    app[web_channel.MAX_BODY] = settings.max_body_bytes
    wechat_channel.configure(app, settings)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        sessions = make_sessions(engine)
        transact = UnitOfWork(sessions)
        http = aiohttp.ClientSession()
        coordinator = make_coordinator(settings.redis_url)
        router = Router(
            sessions,
            RasaClient(settings.rasa_url, http, settings.bot_timeout_s, settings.bot_concurrency),
            coordinator,
            profile,
            max_text_chars=settings.max_text_chars,
            transact=transact,
            metrics=metrics,
        )
        app[ROUTER] = router
        app[SENDERS] = {}
        answering = Answering(router, settings.answer_concurrency)
        web_channel.setup_runtime(app, router)
        wechat_channel.setup_runtime(app, router, answering, sessions, http, settings)
        api.setup_runtime(app, sessions, settings.api_token)
        worker = OutboxWorker(sessions, app[SENDERS], transact=transact, metrics=metrics)
        app[OUTBOX] = worker
        router.on_enqueued = worker.wake
        sms = sms_channel.setup_runtime(app, router, answering, settings, outbox_max_attempts=worker.max_attempts,
                                        on_enqueued=worker.wake)
        events_api.setup_runtime(app, sms.surveys, settings.ticket_callback_secret, settings.ticket_callback_window_s)
        tasks = [
            asyncio.create_task(_retry_loop(router, settings.retry_interval_s)),
            asyncio.create_task(worker.run(settings.outbox_interval_s)),
        ]
        yield
        await answering.close()
        await wechat_channel.shutdown(app)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await sms.close()
        await http.close()
        await coordinator.close()
        transact.close()
        await engine.dispose()

    app.cleanup_ctx.append(resources)
    web_channel.add_routes(app)
    wechat_channel.add_routes(app)
    api.add_routes(app)
    sms_channel.add_routes(app)
    events_api.add_routes(app)
    app.router.add_get("/healthz", healthz)
    return app


async def _retry_loop(router: Router, interval_s: float) -> None:
    """Messages kept while the bot was down are sent as soon as it answers again."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            sent = await router.retry_pending()
            if sent:
                log.info("delivered %d messages kept while the bot was down", sent)
            recovered = await router.recover_received()
            if recovered:
                log.info("answered messages of %d conversations kept before a restart", recovered)
        except Exception:
            log.exception("retrying pending messages failed; will try again")
