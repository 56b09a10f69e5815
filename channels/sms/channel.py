"""The SMS channel: the outbox sender for every SMS, the providers' callbacks, and SMS as intake.

POST /sms/alibaba/up       SmsUp push (JSON array)          → {"code":0,"msg":"成功"}
POST /sms/alibaba/report   SmsReport push (JSON array)      → {"code":0,"msg":"成功"}
POST /sms/tencent/reply    reply callback (one JSON object) → {"result":0,"errmsg":"OK"}
POST /sms/tencent/status   status callback (JSON array)     → {"result":0,"errmsg":"OK"}

Neither provider signs its pushes, so the URLs carry a secret (?token=…, HOTLINE_SMS_CALLBACK_TOKEN).
An uplink is first offered to the policy the app gave (the survey: a rating, a correction, 退订/TD);
anything else is a citizen writing to the hotline and goes to the intake, answered by SMS.
Every callback item is recorded once (inbox_keys), so a repeated push changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy import String, cast, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels.base import ChannelContext, Intake
from channels.sms import alibaba, tencent
from channels.sms import templates as sms_templates
from channels.sms.base import SmsProvider, normalise_phone
from channels.sms.log import LogSms
from channels.sms.models import SmsRecord
from channels.sms.templates import Templates
from common import buttons
from common import sms as kinds
from common.messages import InboundMessage, Reply
from gateway.config import Settings
from gateway.http import BadJson, json_error_exception, load_json, read_limited
from gateway.logs import redact
from storage.base import ERASED, utcnow
from storage.inbox import InboxKey
from storage.outbox import OutboxItem, Sender, SendResult

log = logging.getLogger(__name__)

NAME = "sms"
MAX_ITEMS = 100  # per push; providers batch, but not thousands
Parse = Callable[[dict[str, Any]], dict[str, Any]]
Handler = Callable[[web.Request], Awaitable[web.Response]]


def make_templates(settings: Settings) -> Templates:
    """The configured templates, checked against the provider's rules: a template the provider would
    refuse, or one that cannot carry its kind's variables, stops the start with the reason."""
    ids = {kinds.REPLY: settings.sms_template_reply, kinds.NOTICE: settings.sms_template_notice,
           kinds.SURVEY: settings.sms_template_survey, kinds.SURVEY5: settings.sms_template_survey5,
           kinds.ACK: settings.sms_template_ack, kinds.CODE: settings.sms_template_code}
    try:
        texts = json.loads(settings.sms_template_texts) if settings.sms_template_texts else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"HOTLINE_SMS_TEMPLATE_TEXTS is not JSON: {exc}") from exc
    if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
        raise ValueError('HOTLINE_SMS_TEMPLATE_TEXTS must be a JSON object {"kind": "wording with ${variables}"}')
    return sms_templates.load(settings.sms_provider, ids, texts, settings.sms_sign_name,
                              settings.sms_variable_max_chars)


def make_provider(settings: Settings) -> SmsProvider:
    """The configured provider; a cloud provider without credentials or template stops the start
    with a message naming the variable, rather than failing every SMS later."""
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
            api_url=settings.sms_api_url, timeout_s=settings.sms_timeout_s,
        )
    if settings.sms_provider == "tencent":
        return tencent.TencentSms(
            secret_id=settings.sms_key_id, secret_key=settings.sms_key_secret, app_id=settings.sms_app_id,
            sign_name=settings.sms_sign_name, region=settings.sms_region,
            api_url=settings.sms_api_url, timeout_s=settings.sms_timeout_s,
        )
    if settings.sms_provider == "log":
        return LogSms(settings.sms_sign_name)
    raise ValueError(f"HOTLINE_SMS_PROVIDER={settings.sms_provider!r}; expected log, alibaba or tencent")


def render(body: dict[str, Any]) -> str:
    """SMS has no buttons: their titles, numbered, become what to reply. Lines become one (a
    summary's "· 地点：…" lines joined by "；"): every character is paid for."""
    lines = [line.strip().lstrip("·").strip() for line in str(body.get("text", "")).strip().splitlines()]
    text = "；".join(line for line in lines if line).replace("：；", "：")
    return buttons.as_text(text, body.get("buttons"))


class SmsPolicy(Protocol):
    """What the rest of the hotline decides about SMS; the channel only sends, records and receives.
    The app gives the survey's (handoff/survey_sms.py)."""

    def clock(self) -> dt.datetime:
        """The time SMS records are stamped with (the survey's clock, so tests control both)."""
        ...

    async def take_reply(self, session: AsyncSession, phone: str, text: str) -> bool | str:
        """Offered every uplink first, in the caller's transaction. True: it was an answer to us, not
        for the bot; False: it is for the bot; a string: the bot gets that earlier message of the
        citizen's instead (they said a reply we held was meant for the bot)."""
        ...

    async def refuse(self, phone: str, item: OutboxItem) -> str | None:
        """Why this SMS must not go out after all (the number opted out since), or None."""
        ...

    async def sent(self, item: OutboxItem, now: dt.datetime) -> None:
        """Every part of the SMS was accepted by the provider."""
        ...

    async def not_sent(self, session: AsyncSession, item: OutboxItem, error: str) -> None:
        """The SMS could not be sent and will not be retried (in the caller's transaction)."""
        ...

    async def undelivered(self, session: AsyncSession, record: SmsRecord, item: OutboxItem | None, error: str) -> None:
        """The provider reported a sent SMS as not delivered (in the caller's transaction)."""
        ...


class NoPolicy:
    """SMS without a survey: nothing is refused, nothing is taken before the bot."""

    def clock(self) -> dt.datetime:
        return utcnow()

    async def take_reply(self, session: AsyncSession, phone: str, text: str) -> bool | str:
        return False

    async def refuse(self, phone: str, item: OutboxItem) -> str | None:
        return None

    async def sent(self, item: OutboxItem, now: dt.datetime) -> None:
        return None

    async def not_sent(self, session: AsyncSession, item: OutboxItem, error: str) -> None:
        return None

    async def undelivered(self, session: AsyncSession, record: SmsRecord, item: OutboxItem | None, error: str) -> None:
        return None


class SmsSender:
    """Outbox sender for channel "sms": turns a queued SMS into template messages (templates.py), sends
    each once (a retry resumes after the last accepted one), records every one, and tells the policy
    what became of the SMS."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        provider: SmsProvider,
        policy: SmsPolicy,
        templates: Templates,
        *,
        max_attempts: int = 10,
    ) -> None:
        self.sessions = sessions
        self.provider = provider
        self.policy = policy
        self.templates = templates
        self.max_attempts = max_attempts

    def clock(self) -> dt.datetime:
        return self.policy.clock()

    async def send(self, item: OutboxItem) -> SendResult:
        body = item.body or {}
        phone = normalise_phone(item.recipient)
        if phone is None:
            return await self._give_up(item, "recipient is not a mainland mobile number")
        variables = body.get("vars")
        kind = str(body.get("kind") or kinds.REPLY)
        parts = self.templates.messages(kind, variables if isinstance(variables, dict) else None, render(body))
        if not parts:
            return SendResult("failed", error=f"no SMS template can carry this {kind} SMS (or it is empty)")
        refusal = await self.policy.refuse(phone, item)
        if refusal is not None:
            return SendResult("failed", error=refusal)
        async with self.sessions() as session:
            rows = await session.execute(
                select(SmsRecord.part, SmsRecord.provider_id).where(SmsRecord.outbox_id == item.id)
            )
            done: dict[int, str | None] = {part: provider_id for part, provider_id in rows}
        for number, part in enumerate(parts, 1):
            if number in done:
                continue
            result = await self.provider.send(phone, part, out_id=f"{item.id}-{number}")
            result = replace(result, error=redact(result.error))  # errors end up in logs and the outbox row
            if result.outcome != "sent":
                if result.outcome == "retry" and item.attempts < self.max_attempts:
                    return SendResult("retry", error=result.error)
                return await self._give_up(item, result.error)
            async with self.sessions() as session:
                session.add(SmsRecord(outbox_id=item.id, part=number, provider=self.provider.name, phone=phone,
                                      text=part.text, provider_id=result.provider_id, delivery="sent",
                                      delivery_error="", created_at=self.clock()))
                await session.commit()
            done[number] = result.provider_id
        await self.policy.sent(item, self.clock())
        return SendResult("sent", provider_id=done.get(1))

    async def _give_up(self, item: OutboxItem, error: str) -> SendResult:
        async with self.sessions() as session:
            await self.policy.not_sent(session, item, error)
            await session.commit()
        return SendResult("failed", error=error)


class SmsChannel:
    """SMS as a channel: the outbox sender for every SMS, the providers' callbacks, and SMS as intake."""

    name = NAME

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._intake: Intake | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self.policy: SmsPolicy = NoPolicy()
        self.provider: SmsProvider | None = None
        self._sender: SmsSender | None = None

    @property
    def intake(self) -> Intake:
        assert self._intake is not None, "the SMS channel is used before the app started it"
        return self._intake

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        assert self._sessions is not None, "the SMS channel is used before the app started it"
        return self._sessions

    async def start(self, context: ChannelContext, policy: SmsPolicy | None = None) -> None:
        """`policy`: what the survey (or anything else) decides about SMS; none by default."""
        settings = context.settings
        self._intake, self._sessions = context.intake, context.sessions
        self.policy = policy or NoPolicy()
        templates = make_templates(settings)
        self.provider = make_provider(settings)
        self._sender = SmsSender(context.sessions, self.provider, self.policy, templates,
                                 max_attempts=context.outbox_max_attempts)
        if not settings.sms_callback_token:
            log.warning("HOTLINE_SMS_CALLBACK_TOKEN is not set: the SMS callback URLs refuse every post")

    async def stop(self) -> None:
        if self.provider is not None:
            await self.provider.close()

    def senders(self) -> Mapping[str, Sender]:
        return {NAME: self._sender} if self._sender is not None else {}

    def outbox_channels(self) -> set[str]:
        return {NAME}

    async def forget(self, session: AsyncSession, before: dt.datetime) -> dict[str, int]:
        """Records of SMS sent before `before`: number and text go; provider, delivery and times stay."""
        done = await session.execute(
            update(SmsRecord)
            .where(SmsRecord.created_at < before, ~SmsRecord.phone.startswith(ERASED))
            .values(phone=literal(ERASED) + cast(SmsRecord.id, String), text=""))
        return {"sms_records_erased": done.rowcount or 0}

    async def push(self, channel: str, sender_id: str, replies: list[Reply]) -> bool:
        return False  # replies produced later go through the outbox

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/sms/alibaba/up", self._uplinks(alibaba.NAME, alibaba.parse_up, alibaba.ACK))
        app.router.add_post("/sms/alibaba/report", self._reports(alibaba.NAME, alibaba.parse_report, alibaba.ACK))
        app.router.add_post("/sms/tencent/reply", self._uplinks(tencent.NAME, tencent.parse_reply, tencent.ACK))
        app.router.add_post("/sms/tencent/status", self._reports(tencent.NAME, tencent.parse_status, tencent.ACK))

    # -- inbound ---------------------------------------------------------------------------------

    async def uplink(self, provider: str, phone_raw: str, text: str, key: str) -> str:
        """One citizen SMS: an answer the policy takes (a survey reply / opt-out), or a message for the
        bot. Returns the route taken."""
        phone = normalise_phone(phone_raw)
        if phone is None:
            return "ignored"  # not a mainland mobile: nothing we can answer
        source = f"sms:{provider}"
        text = text.strip()
        async with self.sessions() as session:
            if await session.scalar(select(InboxKey.id).where(InboxKey.source == source, InboxKey.key == key)):
                return "duplicate"
            taken = await self.policy.take_reply(session, phone, text)
            if taken is True:
                session.add(InboxKey(source=source, key=key, payload={"route": "survey"}))
                try:
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                    return "duplicate"
                self.intake.wake_outbox()
                return "survey"
            await session.commit()  # what the policy noted (a question it asked lapsed) stands
            if isinstance(taken, str):  # "不是": the reply held back for the survey's question is the bot's
                text = taken
        conv = await self.intake.accept(InboundMessage(NAME, phone, text, message_id=key))
        async with self.sessions() as session:
            session.add(InboxKey(source=source, key=key, payload={"route": "bot"}))
            with contextlib.suppress(IntegrityError):
                await session.commit()
        if conv is None:
            return "duplicate"
        self.intake.answer_later(conv)
        return "bot"

    async def report(self, provider: str, provider_id: str, ok: bool, error: str, key: str) -> str:
        """A delivery report: update the SMS record; the policy hears of a failed delivery."""
        source = f"sms:{provider}"
        now = self.policy.clock()
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
                await self.policy.undelivered(session, record, item, error)
            await session.commit()
        return "delivered" if ok else "failed"

    # -- HTTP ------------------------------------------------------------------------------------

    async def _read_json(self, request: web.Request) -> Any:
        """Token check, size limit, UTF-8 JSON; raises web.HTTPException subclasses with JSON bodies.
        Neither provider signs its callbacks, so without a token nothing is taken: a forged uplink
        could otherwise answer a survey, withdraw an order or opt a citizen out."""
        token = self.settings.sms_callback_token
        if not token:
            raise json_error_exception(web.HTTPServiceUnavailable,
                                       "SMS callbacks are closed until HOTLINE_SMS_CALLBACK_TOKEN is set")
        if not hmac.compare_digest(request.query.get("token", "").encode(), token.encode()):
            raise json_error_exception(web.HTTPForbidden, "wrong or missing token")
        raw = await read_limited(request, self.settings.max_body_bytes)
        try:
            return load_json(raw)
        except BadJson as exc:
            raise json_error_exception(web.HTTPBadRequest, str(exc)) from exc

    def _uplinks(self, provider: str, parse: Parse, ack: dict[str, Any]) -> Handler:
        """A provider's uplink callback: each citizen SMS in the push goes to `uplink`."""

        async def handler(request: web.Request) -> web.Response:
            for item in _items(await self._read_json(request), parse):  # Tencent documents one object; arrays too
                await self.uplink(provider, item["phone"], item["text"], item["key"])
            return web.json_response(ack)

        return handler

    def _reports(self, provider: str, parse: Parse, ack: dict[str, Any]) -> Handler:
        """A provider's delivery-report callback: each report in the push goes to `report`."""

        async def handler(request: web.Request) -> web.Response:
            for item in _items(await self._read_json(request), parse):
                await self.report(provider, item["provider_id"], item["ok"], item["error"], item["key"])
            return web.json_response(ack)

        return handler


def _items(data: Any, parse: Parse) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or len(data) > MAX_ITEMS:
        raise json_error_exception(web.HTTPBadRequest, f"expected a JSON array of 1-{MAX_ITEMS} objects")
    try:
        return [parse(item) if isinstance(item, dict) else parse({}) for item in data]
    except ValueError as exc:
        raise json_error_exception(web.HTTPBadRequest, str(exc)) from exc
