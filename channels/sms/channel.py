"""The SMS channel: the outbox sender for every SMS, the providers' callbacks, and SMS as intake.

POST /sms/alibaba/up       SmsUp push (JSON array)          → {"code":0,"msg":"成功"}
POST /sms/alibaba/report   SmsReport push (JSON array)      → {"code":0,"msg":"成功"}
POST /sms/tencent/reply    reply callback (one JSON object) → {"result":0,"errmsg":"OK"}
POST /sms/tencent/status   status callback (JSON array)     → {"result":0,"errmsg":"OK"}

Neither provider signs its pushes, so the URLs carry a secret (?token=…, HOTLINE_SMS_CALLBACK_TOKEN).
An uplink is first offered to the survey (a rating, a correction, 退订/TD); anything else is a
citizen writing to the hotline and goes to the bot through Router.accept/process, answered by SMS.
Every callback item is recorded once (inbox_keys), so a repeated push changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import json
import logging
import traceback
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels.sms import alibaba, tencent
from channels.sms.base import Kind, SmsProvider, normalise_phone, segments
from channels.sms.log import LogSms
from channels.sms.models import SmsRecord
from common.messages import InboundMessage
from gateway.answering import Answering
from gateway.config import Settings
from gateway.http import read_limited
from gateway.logs import redact
from gateway.outbox import SENDERS
from gateway.router import Router
from handoff.models import SmsOptOut, Survey
from handoff.notify import CHANNEL as TICKET_WEBHOOK
from handoff.notify import TicketWebhookSender
from handoff.survey import SurveyService
from storage.conversations import Conversation, Message
from storage.inbox import InboxKey
from storage.outbox import OutboxItem, SendResult

log = logging.getLogger(__name__)

NAME = "sms"
RUNTIME = web.AppKey("sms_runtime", object)  # SmsRuntime; typed loosely to avoid a forward reference
MAX_ITEMS = 100  # per push; providers batch, but not thousands


def make_provider(settings: Settings) -> SmsProvider:
    """The configured provider; a cloud provider without credentials or template stops the start
    with a message naming the variable, rather than failing every SMS later."""
    templates = {"reply": settings.sms_template_reply, "survey": settings.sms_template_survey}
    if settings.sms_provider in ("alibaba", "tencent"):
        needed = {"HOTLINE_SMS_KEY_ID": settings.sms_key_id, "HOTLINE_SMS_KEY_SECRET": settings.sms_key_secret,
                  "HOTLINE_SMS_TEMPLATE_REPLY": settings.sms_template_reply}
        if settings.sms_provider == "tencent":
            needed["HOTLINE_SMS_APP_ID"] = settings.sms_app_id
        missing = [name for name, value in needed.items() if not value]
        if missing:
            raise ValueError(f"HOTLINE_SMS_PROVIDER={settings.sms_provider} needs {', '.join(missing)}")
    if settings.sms_provider == "alibaba":
        return alibaba.AlibabaSms(
            key_id=settings.sms_key_id, key_secret=settings.sms_key_secret, sign_name=settings.sms_sign_name,
            templates=templates, api_url=settings.sms_api_url, timeout_s=settings.sms_timeout_s,
        )
    if settings.sms_provider == "tencent":
        return tencent.TencentSms(
            secret_id=settings.sms_key_id, secret_key=settings.sms_key_secret, app_id=settings.sms_app_id,
            sign_name=settings.sms_sign_name, templates=templates, region=settings.sms_region,
            api_url=settings.sms_api_url, timeout_s=settings.sms_timeout_s,
        )
    if settings.sms_provider == "log":
        return LogSms(settings.sms_sign_name)
    raise ValueError(f"HOTLINE_SMS_PROVIDER={settings.sms_provider!r}; expected log, alibaba or tencent")


def render(body: dict[str, Any]) -> str:
    """SMS has no buttons: their titles become what to reply."""
    text = str(body.get("text", "")).strip()
    titles = [str(b.get("title", "")) for b in body.get("buttons") or [] if isinstance(b, dict) and b.get("title")]
    if titles:
        text += "请回复：" + "、".join(f"{i}{t}" for i, t in enumerate(titles, 1))
    return text


class SmsSender:
    """Outbox sender for channel "sms": splits into segments, sends each once (a retry resumes after
    the last accepted segment), records every segment, starts a survey's window on acceptance, and
    flags a phone revisit when an SMS cannot be sent."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        provider: SmsProvider,
        surveys: SurveyService,
        *,
        sign_name: str,
        segment_chars: int = 70,
        max_attempts: int = 10,
    ) -> None:
        self.sessions = sessions
        self.provider = provider
        self.surveys = surveys
        self.sign_name = sign_name
        self.segment_chars = segment_chars
        self.max_attempts = max_attempts

    def clock(self) -> dt.datetime:
        return self.surveys.clock()  # one clock for the survey and its SMS, so tests control both

    async def send(self, item: OutboxItem) -> SendResult:
        body = item.body or {}
        kind: Kind = "survey" if body.get("kind") == "survey" else "reply"
        survey_id = body.get("survey_id") if kind == "survey" else None
        phone = normalise_phone(item.recipient)
        if phone is None:
            return await self._give_up(item, survey_id, "recipient is not a mainland mobile number")
        parts = segments(render(body), self.sign_name, self.segment_chars)
        if not parts:
            return SendResult("failed", error="empty SMS")
        if survey_id is not None and await self._opted_out(phone, int(survey_id)):
            return SendResult("failed", error="the number opted out of survey SMS")
        async with self.sessions() as session:
            rows = await session.execute(
                select(SmsRecord.part, SmsRecord.provider_id).where(SmsRecord.outbox_id == item.id)
            )
            done: dict[int, str | None] = {part: provider_id for part, provider_id in rows}
        for number, part in enumerate(parts, 1):
            if number in done:
                continue
            result = await self.provider.send(phone, part, kind=kind, out_id=f"{item.id}-{number}")
            result = replace(result, error=redact(result.error))  # errors end up in logs and the outbox row
            if result.outcome != "sent":
                if result.outcome == "retry" and item.attempts < self.max_attempts:
                    return SendResult("retry", error=result.error)
                return await self._give_up(item, survey_id, result.error)
            async with self.sessions() as session:
                session.add(SmsRecord(outbox_id=item.id, part=number, provider=self.provider.name, phone=phone,
                                      text=part, provider_id=result.provider_id, delivery="sent",
                                      delivery_error="", created_at=self.clock()))
                await session.commit()
            done[number] = result.provider_id
        if survey_id is not None:
            async with self.sessions() as session:
                await self.surveys.mark_sent(session, int(survey_id), self.clock())
                await session.commit()
        return SendResult("sent", provider_id=done.get(1))

    async def _opted_out(self, phone: str, survey_id: int) -> bool:
        """退订 after the survey was queued (e.g. during an outage): it is not sent; a person phones."""
        async with self.sessions() as session:
            if await session.scalar(select(SmsOptOut.id).where(SmsOptOut.phone == phone)) is None:
                return False
            survey = await session.get(Survey, survey_id)
            result = await session.execute(
                update(Survey).where(Survey.id == survey_id, Survey.status == "queued").values(status="opted_out")
            )
            if result.rowcount == 1 and survey is not None:
                await self.surveys.flag_revisit(session, f"optout:{survey_id}", "no_sms_survey", survey.work_order_id,
                                            phone, "市民已退订回访短信，请人工回访")
            await session.commit()
        return True

    async def _give_up(self, item: OutboxItem, survey_id: Any, error: str) -> SendResult:
        async with self.sessions() as session:
            if survey_id is not None:
                await self.surveys.mark_failed(session, int(survey_id), error)
            else:
                await self.surveys.flag_revisit(session, f"outbox:{item.id}", "sms_failed", None, item.recipient,
                                            f"短信未能发出：{error}"[:500])
            await session.commit()
        return SendResult("failed", error=error)


class SmsRuntime:
    """What the SMS routes share: router, survey service, sender, and the background tasks."""

    def __init__(
        self, router: Router, answering: Answering, surveys: SurveyService, provider: SmsProvider, settings: Settings
    ) -> None:
        self.router = router
        self.answering = answering
        self.sessions = router.sessions
        self.surveys = surveys
        self.provider = provider
        self.settings = settings
        self.tasks: set[asyncio.Task[Any]] = set()
        self.http: aiohttp.ClientSession | None = None  # for the ticket webhook, when configured

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def survey_loop(self, interval_s: float) -> None:
        while True:
            try:
                counts = await self.surveys.tick()
                if any(counts.values()):
                    log.info("surveys: %d sent, %d defaulted, %d overdue", counts["sent"], counts["defaulted"],
                             counts["overdue"])
            except Exception as exc:  # no traceback text: SQL errors would carry parameters (phone numbers)
                where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
                log.error("survey pass failed (%s at %s:%s); will try again", type(exc).__name__,
                          where.filename if where else "?", where.lineno if where else "?")
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.provider.close()
        if self.http is not None:
            await self.http.close()

    # -- inbound ---------------------------------------------------------------------------------

    async def uplink(self, provider: str, phone_raw: str, text: str, key: str) -> str:
        """One citizen SMS: a survey reply / opt-out, or a message for the bot. Returns the route taken."""
        phone = normalise_phone(phone_raw)
        if phone is None:
            return "ignored"  # not a mainland mobile: nothing we can answer
        source = f"sms:{provider}"
        text = text.strip()
        async with self.sessions() as session:
            if await session.scalar(select(InboxKey.id).where(InboxKey.source == source, InboxKey.key == key)):
                return "duplicate"
            if await self.surveys.handle_reply(session, phone, text):
                session.add(InboxKey(source=source, key=key, payload={"route": "survey"}))
                try:
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                    return "duplicate"
                self.surveys.wake()
                return "survey"
            await session.rollback()
        text = await self._button_payload(phone, text)
        conv = await self.router.accept(InboundMessage(NAME, phone, text, message_id=key))
        async with self.sessions() as session:
            session.add(InboxKey(source=source, key=key, payload={"route": "bot"}))
            with contextlib.suppress(IntegrityError):
                await session.commit()
        if conv is None:
            return "duplicate"
        self.answering.submit(conv)
        return "bot"

    async def _button_payload(self, phone: str, text: str) -> str:
        """The last reply offered choices (确认提交/修改/取消): a title or its number selects it."""
        choice = unicodedata.normalize("NFKC", text).strip()
        async with self.sessions() as session:
            last = await session.scalar(
                select(Message)
                .join(Conversation)
                .where(Conversation.channel == NAME, Conversation.sender_id == phone, Message.direction == "out")
                .order_by(Message.id.desc())
                .limit(1)
            )
        buttons = (last.payload or {}).get("buttons") if last is not None else None
        for i, button in enumerate(buttons or [], 1):
            if choice in (str(i), button.get("title")):
                return str(button.get("payload") or text)
        return text

    async def report(self, provider: str, provider_id: str, ok: bool, error: str, key: str) -> str:
        """A delivery report: update the SMS record; a failed delivery goes to a person to phone."""
        source = f"sms:{provider}"
        now = self.surveys.clock()
        async with self.sessions() as session:
            session.add(InboxKey(source=source, key=key[:160], payload={"ok": ok}))
            try:
                await session.flush()
            except IntegrityError:
                await session.rollback()
                return "duplicate"
            record = await session.scalar(
                select(SmsRecord).where(SmsRecord.provider == provider, SmsRecord.provider_id == provider_id)
            )
            if record is None:
                await session.commit()  # kept in inbox_keys; the SMS may predate this database
                return "unknown"
            await session.execute(
                update(SmsRecord).where(SmsRecord.id == record.id)
                .values(delivery="delivered" if ok else "failed", delivery_error=error[:255], reported_at=now)
            )
            if not ok:
                item = await session.get(OutboxItem, record.outbox_id) if record.outbox_id else None
                body = item.body if item is not None else {}
                if body.get("kind") == "survey" and body.get("survey_id") is not None:
                    await self.surveys.mark_failed(session, int(body["survey_id"]), error or "未送达")
                else:
                    await self.surveys.flag_revisit(session, f"sms:{record.id}", "sms_undelivered", None, record.phone,
                                                f"短信未送达：{error}"[:500])
            await session.commit()
        return "delivered" if ok else "failed"


# --- HTTP -------------------------------------------------------------------------------------


def _runtime(request: web.Request) -> SmsRuntime:
    return request.app[RUNTIME]  # type: ignore[return-value]


async def _read_json(request: web.Request) -> Any:
    """Token check, size limit, UTF-8 JSON; raises web.HTTPException subclasses with JSON bodies."""
    runtime = _runtime(request)
    token = runtime.settings.sms_callback_token
    if token and not hmac.compare_digest(request.query.get("token", "").encode(), token.encode()):
        raise web.HTTPForbidden(text=json.dumps({"error": "wrong or missing token"}), content_type="application/json")
    raw = await read_limited(request, runtime.settings.max_body_bytes)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"body is not valid UTF-8 JSON: {exc}") from exc


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}, ensure_ascii=False), content_type="application/json")


def _items(data: Any, parse: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or len(data) > MAX_ITEMS:
        raise _bad(f"expected a JSON array of 1-{MAX_ITEMS} objects")
    try:
        return [parse(item) if isinstance(item, dict) else parse({}) for item in data]
    except ValueError as exc:
        raise _bad(str(exc)) from exc


async def alibaba_up(request: web.Request) -> web.Response:
    items = _items(await _read_json(request), alibaba.parse_up)
    for item in items:
        await _runtime(request).uplink(alibaba.NAME, item["phone"], item["text"], item["key"])
    return web.json_response(alibaba.ACK)


async def alibaba_report(request: web.Request) -> web.Response:
    for item in _items(await _read_json(request), alibaba.parse_report):
        await _runtime(request).report(alibaba.NAME, item["provider_id"], item["ok"], item["error"], item["key"])
    return web.json_response(alibaba.ACK)


async def tencent_reply(request: web.Request) -> web.Response:
    for item in _items(await _read_json(request), tencent.parse_reply):  # documented as one object; arrays too
        await _runtime(request).uplink(tencent.NAME, item["phone"], item["text"], item["key"])
    return web.json_response(tencent.ACK)


async def tencent_status(request: web.Request) -> web.Response:
    for item in _items(await _read_json(request), tencent.parse_status):
        await _runtime(request).report(tencent.NAME, item["provider_id"], item["ok"], item["error"], item["key"])
    return web.json_response(tencent.ACK)


def setup_runtime(app: web.Application, router: Router, answering: Answering, settings: Settings, *, outbox_max_attempts: int = 10,
                  on_enqueued: Callable[[], None] | None = None) -> SmsRuntime:
    """Register the "sms" sender and the survey timers; call `close()` on shutdown."""
    surveys = SurveyService(router.sessions, router.profile, on_enqueued=on_enqueued,
                            sign_name=settings.sms_sign_name, segment_chars=settings.sms_segment_chars,
                            webhook_url=settings.ticket_webhook_url)
    provider = make_provider(settings)
    runtime = SmsRuntime(router, answering, surveys, provider, settings)
    router.outbox_channels.add(NAME)
    app[SENDERS][NAME] = SmsSender(router.sessions, provider, surveys, sign_name=settings.sms_sign_name,
                                   segment_chars=settings.sms_segment_chars, max_attempts=outbox_max_attempts)
    app[RUNTIME] = runtime
    if settings.ticket_webhook_url:
        if not settings.ticket_callback_secret:
            raise ValueError("HOTLINE_TICKET_WEBHOOK_URL needs HOTLINE_TICKET_CALLBACK_SECRET to sign with")
        runtime.http = aiohttp.ClientSession()
        app[SENDERS][TICKET_WEBHOOK] = TicketWebhookSender(runtime.http, settings.ticket_callback_secret)
    if not settings.sms_callback_token and settings.sms_provider != "log":
        log.warning("HOTLINE_SMS_CALLBACK_TOKEN is not set: anyone can post to the SMS callback URLs")
    runtime.spawn(runtime.survey_loop(settings.survey_interval_s))
    return runtime


def add_routes(app: web.Application) -> None:
    app.router.add_post("/sms/alibaba/up", alibaba_up)
    app.router.add_post("/sms/alibaba/report", alibaba_report)
    app.router.add_post("/sms/tencent/reply", tencent_reply)
    app.router.add_post("/sms/tencent/status", tencent_status)
