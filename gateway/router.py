"""The gateway's one job: take a normalised message, keep it, route it, act on what comes back.

channel → Router.handle → (bot | waiting for an agent) → payload actions (work orders) → replies.
Every inbound message is committed before anything else runs, so a crash or a bot outage can
delay an answer but never lose what the citizen wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, aliased

from common import buttons, payloads
from common.messages import InboundMessage, NotKept, Reply
from gateway import waiting
from gateway.bot_client import BotUnavailable, RasaClient, bot_sender
from gateway.coordination import Coordinator
from gateway.limits import SenderLimits, Standing
from gateway.metrics import Metrics
from handoff import followups
from handoff.workorders import IntakeError, create_from_intake
from profiles import SCREEN_KINDS, Profile
from profiles import load as load_profile
from storage.base import utcnow
from storage.conversations import Conversation, Message
from storage.db import UnitOfWork
from storage.outbox import enqueue

log = logging.getLogger(__name__)
T = TypeVar("T")

BOT_DOWN_TEXT = "抱歉，智能客服暂时繁忙，您的留言已保存，恢复后会第一时间回复您。紧急情况请直接拨打110、119、120或122。"
WAITING_TEXT = "您的留言已收到，人工客服接入后会看到完整记录，请稍候。"
TOO_LONG_TEXT = "您的留言较长，已完整保存。我们先根据前{limit}字为您处理，承办单位可以看到全文。"
MEDIA_LABELS = {"image": "图片", "voice": "语音", "video": "视频", "shortvideo": "视频", "file": "文件"}
MEDIA_TEXT = "已收到您发送的{label}，已保存并会附在您的诉求记录中。请再用文字简单说一下您要反映的问题：发生了什么事、在什么地方。"
UNREADABLE_TEXT = "抱歉，暂时无法识别这类消息，已为您保存。请用文字描述您要反映的问题，例如发生了什么事、在什么地方。"
RESENT_PREFIX = "（此前未能送达的回复）"
INTAKE_FAILED_TEXT = "抱歉，登记时出现问题，请稍后重试或回复“人工”转接人工客服。"
CANCELLED_TEXT = "已为您取消转接人工客服。请继续描述您要反映的问题，智能客服为您服务。"
CANCEL_WORDS = ("取消", "取消转接", "不等了")
BAD_PAYLOAD_TEXT = "抱歉，处理您的请求时出现问题，请稍后重试或回复“人工”转接人工客服。"
FAILING_TEXT = "抱歉，处理您的留言时出现问题。您的留言已保存，我们会尽快回复您。紧急情况请直接拨打110、119、120或122。"
FAILED_TEXT = "抱歉，您的留言暂时无法自动处理，已保存并交工作人员查看。如需尽快办理，请回复“人工”转接人工客服。"
MAX_ATTEMPTS = 3  # answering a message that raises: then it is "failed" (operators see and retry it)
DUPLICATE_TTL_S = 24 * 3600
UNFINISHED = ("queued", "received", "pending_bot")  # out: waiting for the citizen; in: waiting for the bot

Notify = Callable[[str, str, list[Reply]], Awaitable[bool]]
TakenIn = tuple[Conversation, list[Reply], list[Message], Standing]


class _ConversationStarted(Exception):
    """Another replica started this conversation between our read and our insert: read it again."""


class _AlreadyStored(Exception):
    """This message id is already stored: a retry, another replica, or a restart."""


def replies_without_text(attachments: list[dict[str, Any]]) -> list[Reply]:
    """What a message the bot cannot read gets (a picture, a voice note, a card): it is kept with
    its attachments, and the citizen is asked to describe the matter in words. Provider events
    (e.g. unsubscribe) are only kept."""
    kinds = [a.get("type") for a in attachments]
    if kinds and all(k == "event" for k in kinds):
        return []
    label = next((MEDIA_LABELS[k] for k in kinds if k in MEDIA_LABELS), None)
    return [Reply(MEDIA_TEXT.format(label=label) if label else UNREADABLE_TEXT)]


def replies_from_bot(messages: list[dict[str, Any]]) -> tuple[list[Reply], list[dict[str, Any]]]:
    """Split Rasa's REST output into what the citizen sees and the custom payloads we act on."""
    replies, payloads = [], []
    for m in messages:
        if isinstance(m.get("custom"), dict):
            payloads.append(m["custom"])
        if m.get("text"):
            replies.append(Reply(str(m["text"]), buttons.from_rasa(m.get("buttons"))))
    return replies, payloads


def _conversation_with_open_query() -> Select[Any]:
    """Built once: constructing it (aliases, correlated subqueries) cost more than running it."""
    unfinished = aliased(Message)
    until, recent = SenderLimits.standing_columns(bindparam("since"))
    return (
        select(Conversation, unfinished, until, recent)
        .outerjoin(unfinished, (unfinished.conversation_id == Conversation.id) & unfinished.status.in_(UNFINISHED))
        .where(Conversation.channel == bindparam("channel"), Conversation.sender_id == bindparam("sender_id"))
        .order_by(unfinished.id)
    )


async def requeue_failed(sessions: async_sessionmaker[AsyncSession]) -> int:
    """An operator's retry of the messages set aside as failed (after a fix): they are "received"
    again with their attempts reset, and the gateway's recovery pass answers them."""
    async with sessions() as session:
        rows = (await session.scalars(
            select(Message).where(Message.status == "failed", Message.direction == "in"))).all()
        for row in rows:
            row.status = "received"
            row.payload = {k: v for k, v in (row.payload or {}).items() if k != "failed_attempts"} or None
        await session.commit()
    return len(rows)


class Router:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bot: RasaClient,
        coordinator: Coordinator,
        profile: Profile,
        *,
        max_text_chars: int = 2000,
        transact: UnitOfWork | None = None,
        metrics: Metrics | None = None,
        outbox_channels: Iterable[str] = (),
        notify: Notify | None = None,
        on_enqueued: Callable[[], None] | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        """`outbox_channels`: channels that answer later through the outbox (WeChat, SMS) rather than
        in the HTTP response; `notify`: pushes replies produced later (the web page's WebSocket);
        `on_enqueued`: wakes the outbox worker after a commit that queued replies; `clock`: the app's
        time for work orders and queued replies (the outbox and the survey read the same one)."""
        self.clock = clock
        self.sessions = sessions
        self.bot = bot
        self.coordinator = coordinator
        self.profile = profile
        self.max_text_chars = max_text_chars
        self.metrics = metrics or Metrics()
        self.limits = SenderLimits(sessions)
        # A turn's two transactions, each in one hop off the loop; the app shares its own with the outbox.
        self._owns_transact = transact is None
        self.transact = transact or UnitOfWork(sessions)
        self.notify = notify
        self.outbox_channels: set[str] = set(outbox_channels)
        self.on_enqueued = on_enqueued
        self._with_open_query = _conversation_with_open_query()
        self._accepting: list[tuple[InboundMessage, asyncio.Future[Conversation | None]]] = []
        self._accept_writer: asyncio.Task[None] | None = None
        # Given by the app: a citizen's message in a conversation a person holds goes to the console.
        self.to_agent: Callable[[Conversation, Message], Awaitable[None]] | None = None
        self.waiting = waiting.Waiting(sessions, self.transact, bot, profile, self._profile, clock, self.metrics)

    def close(self) -> None:
        if self._owns_transact:
            self.transact.close()

    async def handle(self, msg: InboundMessage) -> list[Reply]:
        """Process one inbound message and return the replies for it (plus any queued earlier).
        Raises NotKept when the message could not be committed: nothing may then say it was kept."""
        if await self._seen(msg):
            self.metrics.duplicates.labels(msg.channel).inc()
            return await self._replies_for_duplicate(msg)
        started = time.perf_counter()
        async with contextlib.AsyncExitStack() as stack:
            await self._keeping(msg, stack.enter_async_context(self._conversation_lock(msg.channel, msg.sender_id)))
            taken = await self._keeping(msg, self._take_in(msg))
            await self._mark_seen(msg)
            if taken is None:  # same message id already stored (another replica, or a restart)
                self.metrics.duplicates.labels(msg.channel).inc()
                return await self._replies_for_duplicate(msg)
            self.metrics.messages.labels(msg.channel).inc()
            conv, released, to_answer, standing = taken
            replies = released + await self._answer(conv, to_answer, standing=standing)
        self.metrics.turn_seconds.labels(msg.channel).observe(time.perf_counter() - started)
        return replies

    @staticmethod
    async def _keeping(msg: InboundMessage, step: Awaitable[T]) -> T:
        """A step before the message's commit: any failure becomes NotKept, logged without the SQL
        parameters or the text (they carry the citizen's words and numbers)."""
        try:
            return await step
        except Exception as exc:
            cause = getattr(exc, "orig", None)  # the driver's error, e.g. sqlite3.OperationalError
            detail = type(exc).__name__ + (f" from {type(cause).__module__}.{type(cause).__name__}" if cause else "")
            log.warning("message not kept on %s (%s); the sender is asked to send it again", msg.channel, detail)
            raise NotKept from exc

    async def _seen(self, msg: InboundMessage) -> bool:
        """The fast path for a retry: the id was claimed after an earlier commit. Without the
        coordinator the database's unique key still decides, so an outage here is not an error."""
        if not msg.message_id:
            return False
        try:
            return await self.coordinator.seen(self._dedupe_key(msg))
        except Exception as exc:  # noqa: BLE001 - the database decides instead
            log.warning("duplicate fast path unavailable: %s", type(exc).__name__)
            return False

    async def _mark_seen(self, msg: InboundMessage) -> None:
        """Claimed only after the commit, so a message that was not kept is never taken for a duplicate."""
        if not msg.message_id:
            return
        try:
            await self.coordinator.claim(self._dedupe_key(msg), DUPLICATE_TTL_S)
        except Exception as exc:  # noqa: BLE001 - only the fast path is lost
            log.warning("duplicate fast path not recorded: %s", type(exc).__name__)

    @staticmethod
    def _dedupe_key(msg: InboundMessage) -> str:
        return f"{msg.channel}:{msg.sender_id}:{msg.message_id}"

    async def _take_in(self, msg: InboundMessage) -> TakenIn | None:
        """One transaction: find or start the conversation, keep the message, release the replies
        queued while the citizen was away, read what is left to answer (this message and any kept
        earlier) and the sender's standing. None when the message id is already stored."""
        since = self.limits.flood_window_start(self.profile)
        for _ in range(2):
            try:
                conv, released, to_answer, standing, requeued = await self.transact(
                    lambda s: self._take_in_work(s, msg, since)
                )
            except _ConversationStarted:
                continue
            except _AlreadyStored:
                return None
            self._wake_outbox(conv, requeued)
            return conv, released, to_answer, standing
        raise RuntimeError(f"conversation {msg.channel}:… could not be read or started")

    def _take_in_work(
        self, session: Session, msg: InboundMessage, since: dt.datetime
    ) -> tuple[Conversation, list[Reply], list[Message], Standing, bool]:
        rows = session.execute(
            self._with_open_query, {"channel": msg.channel, "sender_id": msg.sender_id, "since": since}
        ).all()
        if rows:
            conv = rows[0][0]
            open_rows = [r[1] for r in rows if r[1] is not None]
        else:
            conv, open_rows = Conversation(channel=msg.channel, sender_id=msg.sender_id, profile=self.profile.id,
                                           state="bot"), []
            session.add(conv)
            try:
                session.flush()
            except IntegrityError as exc:
                raise _ConversationStarted from exc
        inbound = Message(**self._inbound_values(conv, msg))
        session.add(inbound)
        try:
            session.flush()
        except IntegrityError as exc:
            raise _AlreadyStored from exc
        if not rows or conv.profile != self.profile.id:  # a new conversation, or an older profile
            standing = self.limits.read_standing(session, conv, self._profile(conv))
        else:  # read before this message was added (the same under the conversation lock): it counts too
            standing = Standing(rows[0][2], (rows[0][3] or 0) + 1)
        queued = [r for r in open_rows if r.direction == "out"]
        released = self._release_queued(session, conv, queued)
        to_answer = [r for r in open_rows if r.direction == "in"] + [inbound]
        return conv, released, to_answer, standing, bool(queued)

    async def accept(self, msg: InboundMessage) -> Conversation | None:
        """Keep a message from a channel that must be acknowledged at once (WeChat, SMS callbacks);
        None for a duplicate; NotKept when it could not be committed. Call `process` afterwards, typically in a background task."""
        if await self._seen(msg):
            self.metrics.duplicates.labels(msg.channel).inc()
            return None
        future: asyncio.Future[Conversation | None] = asyncio.get_running_loop().create_future()
        self._accepting.append((msg, future))
        if self._accept_writer is None or self._accept_writer.done():
            self._accept_writer = asyncio.create_task(self._write_accepted())
        # a caller that goes away must not cancel the others' batch
        conv = await self._keeping(msg, asyncio.shield(future))
        await self._mark_seen(msg)
        counter = self.metrics.messages if conv is not None else self.metrics.duplicates
        counter.labels(msg.channel).inc()
        return conv

    async def _write_accepted(self) -> None:
        """Group commit: messages accepted while a batch is being written go into the next batch, so a
        burst of concurrent pushes costs a few fsyncs instead of two per message (SQLite serialises
        commits). A batch that fails (a duplicate another replica stored, one bad row) is redone
        message by message, where the duplicate gets None and only a failing message its error."""
        while self._accepting:
            batch, self._accepting = self._accepting, []
            try:
                results: list[Conversation | None | BaseException] = list(
                    await self._store_batch([msg for msg, _ in batch])
                )
            except Exception:  # noqa: BLE001 - retried one by one just below
                results = []
                for msg, _ in batch:
                    try:
                        taken = await self._take_in(msg)
                        results.append(taken[0] if taken is not None else None)
                    except Exception as exc:  # noqa: BLE001 - handed to that message's caller (503)
                        results.append(exc)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _store_batch(self, msgs: list[InboundMessage]) -> list[Conversation]:
        return await self.transact(lambda session: self._store_batch_work(session, msgs))

    def _store_batch_work(self, session: Session, msgs: list[InboundMessage]) -> list[Conversation]:
        """One read and two bulk inserts (ORM bulk INSERT, not a unit of work per row) in one commit."""
        keys = {(m.channel, m.sender_id) for m in msgs}
        found = session.scalars(
            select(Conversation).where(
                Conversation.channel.in_({c for c, _ in keys}), Conversation.sender_id.in_({s for _, s in keys})
            )
        )
        convs = {(c.channel, c.sender_id): c for c in found if (c.channel, c.sender_id) in keys}
        missing = [{"channel": c, "sender_id": s, "profile": self.profile.id, "state": "bot"}
                   for c, s in keys - set(convs)]
        if missing:
            created = session.scalars(insert(Conversation).returning(Conversation), missing)
            convs |= {(c.channel, c.sender_id): c for c in created}
        # Plain rows into the table, not ORM objects: in a burst, building objects nobody reads was most
        # of the cost (answering reads the messages again).
        session.execute(insert(Message.__table__), [self._inbound_values(convs[(m.channel, m.sender_id)], m) for m in msgs])
        return [convs[(m.channel, m.sender_id)] for m in msgs]

    async def process(self, conv: Conversation) -> list[Reply]:
        """Answer every accepted message of a conversation in the order they arrived."""
        started = time.perf_counter()
        async with self._conversation_lock(conv.channel, conv.sender_id):
            released, to_answer, standing, requeued = await self.transact(
                lambda session: self._open_work(session, conv)
            )
            self._wake_outbox(conv, requeued)
            replies = released + await self._answer(conv, to_answer, standing=standing)
        if to_answer:
            self.metrics.turn_seconds.labels(conv.channel).observe(time.perf_counter() - started)
        return replies

    def _open_work(
        self, session: Session, conv: Conversation
    ) -> tuple[list[Reply], list[Message], Standing, bool]:
        """Release the replies queued for the citizen; return them, the messages to answer, the
        sender's standing and whether anything was put in the outbox."""
        queued, to_answer = self._open_messages(session, conv)
        standing = self.limits.read_standing(session, conv, self._profile(conv))
        return self._release_queued(session, conv, queued), to_answer, standing, bool(queued)

    @staticmethod
    def _open_messages(session: Session, conv: Conversation) -> tuple[list[Message], list[Message]]:
        """One read for all of a conversation's unfinished business: replies queued for the citizen,
        and the messages to answer (received, and any kept while the bot was down, which go first)."""
        query = select(Message).where(Message.conversation_id == conv.id, Message.status.in_(UNFINISHED))
        rows = session.scalars(query.order_by(Message.id)).all()
        return [r for r in rows if r.direction == "out"], [r for r in rows if r.direction == "in"]

    def _wake_outbox(self, conv: Conversation, wrote: bool) -> None:
        """After a commit that wrote replies for this conversation: an outbox channel's worker sends them now."""
        if wrote and conv.channel in self.outbox_channels and self.on_enqueued is not None:
            self.on_enqueued()

    def _release_queued(self, session: Session, conv: Conversation, queued: list[Message]) -> list[Reply]:
        """Replies produced while the citizen was away: the web gets them with its next answer;
        outbox channels (a WeChat reply held by the 48-hour window, profile fallback "marker") send
        them again now that the citizen wrote. Part of the caller's transaction."""
        if conv.channel not in self.outbox_channels:
            for row in queued:
                row.status = "delivered"
            return [Reply(r.text, tuple((r.payload or {}).get("buttons", ()))) for r in queued]
        for row in queued:
            row.status = "outbox"
            offered = list((row.payload or {}).get("buttons", ()))
            enqueue(session, channel=conv.channel, recipient=conv.sender_id,
                    body={"text": RESENT_PREFIX + row.text, "buttons": offered},
                    conversation_id=conv.id, message_id=row.id, not_before=self.clock())
        return []

    async def recover_received(self, older_than_s: float = 30.0) -> int:
        """After a crash or restart, answer messages that were kept but never processed."""
        cutoff = self.clock() - dt.timedelta(seconds=older_than_s)
        async with self.sessions() as session:
            conv_ids = (
                await session.scalars(
                    select(Message.conversation_id)
                    .where(Message.status == "received", Message.direction == "in", Message.created_at <= cutoff)
                    .distinct()
                )
            ).all()
        for conv_id in conv_ids:
            try:
                async with self.sessions() as session:
                    conv = await session.get(Conversation, conv_id)
                if conv is None:
                    continue
                async with self._conversation_lock(conv.channel, conv.sender_id):
                    # read under the lock: another task may have answered
                    _, to_answer = await self.transact(functools.partial(self._open_messages, conv=conv))
                    replies = await self._answer(conv, to_answer, delivered=False)
                await self._push_later(conv, [m.id for m in to_answer], replies)
            except Exception as exc:  # noqa: BLE001 - one conversation must not stop the others' recovery
                log.error("recovering conversation %s failed (%s); the others go on", conv_id, type(exc).__name__)
        return len(conv_ids)

    def _conversation_lock(self, channel: str, sender_id: str):  # noqa: ANN202 - an async context manager
        return self.coordinator.lock(f"conv:{channel}:{sender_id}")

    async def _answer(
        self, conv: Conversation, to_answer: list[Message], *, delivered: bool = True, standing: Standing | None = None
    ) -> list[Reply]:
        """`standing`, read with the messages, holds for one message; after several, each reads its own."""
        replies: list[Reply] = []
        first_pending = next((r.id for r in to_answer if r.status == "pending_bot"), None)
        received = [r for r in to_answer if r.status == "received"]
        for row in received:
            behind = first_pending is not None and first_pending < row.id
            replies += await self._isolated(
                conv, row, self._route(conv, row, row.text, delivered=delivered, behind_pending=behind,
                                       standing=standing if len(received) == 1 else None),
                delivered=delivered,
            )
        return replies

    async def _isolated(
        self, conv: Conversation, inbound: Message, step: Awaitable[list[Reply]], *, delivered: bool
    ) -> list[Reply]:
        """One message's answer; when it raises (a payload of the wrong shape, a bug), the message is
        not answered again forever nor allowed to stop the others: after MAX_ATTEMPTS it is "failed"
        and the citizen gets an apology. BotUnavailable is not a failure of the message."""
        try:
            return await step
        except (BotUnavailable, NotKept):
            raise
        except Exception as exc:  # noqa: BLE001 - isolated here, logged without text or parameters
            return await self._failed_attempt(conv, inbound, exc, delivered=delivered)

    async def _failed_attempt(
        self, conv: Conversation, inbound: Message, exc: Exception, *, delivered: bool
    ) -> list[Reply]:
        attempts = int((inbound.payload or {}).get("failed_attempts", 0)) + 1
        inbound.payload = {**(inbound.payload or {}), "failed_attempts": attempts}
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        # No exception text: it may carry the citizen's words or SQL parameters.
        log.error("conversation %s: answering message %s failed (%s at %s:%s), attempt %d of %d",
                  conv.id, inbound.id, type(exc).__name__, where.filename if where else "?",
                  where.lineno if where else "?", attempts, MAX_ATTEMPTS)
        payload = inbound.payload
        await self.transact(lambda session: session.execute(
            update(Message).where(Message.id == inbound.id).values(payload=payload)
        ))
        if attempts >= MAX_ATTEMPTS:
            self.metrics.failed.labels(conv.channel).inc()
            return await self._finish(conv, inbound, [Reply(FAILED_TEXT)], status="failed", delivered=delivered)
        return [Reply(FAILING_TEXT)] if delivered else []  # kept as it was: recovery tries again

    def _inbound_values(self, conv: Conversation, msg: InboundMessage) -> dict[str, Any]:
        return {
            "conversation_id": conv.id,
            "direction": "in",
            "provider_message_id": msg.message_id,
            "text": msg.text,
            "payload": {"attachments": list(msg.attachments)} if msg.attachments else None,
            "status": "received",
            "created_at": msg.received_at or self.clock(),  # the app's one clock, as the limits read it
        }

    async def _route(
        self,
        conv: Conversation,
        inbound: Message,
        text: str,
        *,
        delivered: bool = True,
        behind_pending: bool = False,
        standing: Standing | None = None,
    ) -> list[Reply]:
        if not text.strip():  # only channels that keep non-text messages (WeChat media) get here
            attachments = list((inbound.payload or {}).get("attachments", ()))
            return await self._finish(conv, inbound, replies_without_text(attachments), status="done",
                                      delivered=delivered)
        # Who answers is read afresh in this turn; a cancel that loses to a claim goes to the agent.
        if conv.state == "waiting" and text.strip() in CANCEL_WORDS and await self._set_state(conv, "waiting", "bot"):
            return await self._finish(conv, inbound, [Reply(CANCELLED_TEXT)], status="done", delivered=delivered)
        if conv.state == "with_agent":  # a person answers: the bot is not asked
            replies = await self._finish(conv, inbound, [], status="done", delivered=delivered)
            if self.to_agent is not None:
                await self.to_agent(conv, inbound)
            return replies
        if conv.state == "waiting":
            queue = await self.waiting.place_text(conv)
            return await self._finish(conv, inbound, [Reply(WAITING_TEXT), Reply(queue)], status="done",
                                      delivered=delivered)
        if behind_pending:  # keep the citizen's order: this one waits behind the earlier ones
            return await self._finish(conv, inbound, [Reply(BOT_DOWN_TEXT)], status="pending_bot", delivered=delivered)
        decision = await self.limits.check(conv, text, self._profile(conv), standing)
        if decision.limited_text is not None:
            return await self._finish(conv, inbound, [Reply(decision.limited_text)], status="limited", delivered=delivered)
        code = await followups.answer_code(self.sessions, self._profile(conv), conversation_id=conv.id, text=text,
                                           sender_phone=self._sender_phone(conv), channel=conv.channel,
                                           now=self.clock())
        if code is not None:  # the reply to a one-time code this conversation is waiting for
            self._code_queued(code)
            return await self._finish(conv, inbound, [Reply(code.text, code.buttons)], status="done",
                                      delivered=delivered)
        try:
            replies = await self._ask_bot(conv, inbound, text, delivered=delivered, warning=decision.warning)
            return replies
        except BotUnavailable as exc:
            self.metrics.bot_unavailable.inc()
            log.warning("bot unavailable for conversation %s: %s", conv.id, exc)
            return await self._finish(conv, inbound, [Reply(BOT_DOWN_TEXT)], status="pending_bot", delivered=delivered)

    def _profile(self, conv: Conversation) -> Profile:
        """The conversation's jurisdiction (fixed when it started), not whatever is configured now."""
        return self.profile if conv.profile == self.profile.id else load_profile(conv.profile)

    async def _offered(self, conv: Conversation, inbound: Message) -> list[Any]:
        """The buttons of the bot's last turn before `inbound` (all its replies, not only the last)."""
        def work(session: Session) -> list[Any]:
            last_reply_to = session.scalar(
                select(Message.reply_to)
                .where(Message.conversation_id == conv.id, Message.direction == "out", Message.id < inbound.id)
                .order_by(Message.id.desc())
                .limit(1)
            )
            if last_reply_to is None:
                return []
            payloads = session.scalars(select(Message.payload).where(
                Message.conversation_id == conv.id, Message.direction == "out", Message.reply_to == last_reply_to,
                Message.id < inbound.id))
            return [b for p in payloads for b in (p or {}).get("buttons", ())]
        return await self.transact(work)

    async def _bot_text(self, conv: Conversation, inbound: Message, text: str) -> str:
        """What Rasa gets for what the citizen wrote (the message keeps the citizen's words). A button's
        title means that button (the chat page sends the title of the button clicked, so the transcript
        shows what the citizen saw); where buttons are a numbered line (WeChat, SMS), so does its number.
        Rasa reads a text starting with "/" as an intent, skipping the model and the screening: only the
        exact payload of a button the bot just offered goes through as one; anything else is words."""
        typed_button = len(text) <= 32  # button titles are short
        if not typed_button and not text.startswith("/"):
            return text
        offered = await self._offered(conv, inbound)
        numbered = conv.channel in self.outbox_channels
        chosen = buttons.chosen_payload(text, offered, numbered=numbered) if typed_button else None
        if chosen:
            return chosen
        if not text.startswith("/") or any(isinstance(b, dict) and b.get("payload") == text for b in offered):
            return text
        return text.lstrip("/").lstrip() or "／"

    async def _ask_bot(
        self, conv: Conversation, inbound: Message, text: str, *, delivered: bool = True, warning: str | None = None
    ) -> list[Reply]:
        prefix: list[Reply] = [Reply(warning)] if warning else []
        if len(text) > self.max_text_chars:
            prefix.append(Reply(TOO_LONG_TEXT.format(limit=self.max_text_chars)))
            text = text[: self.max_text_chars]
        text = await self._bot_text(conv, inbound, text)
        metadata = {"profile": conv.profile, "channel": conv.channel}
        with self.metrics.bot_seconds.time():
            output = await self.bot.send(bot_sender(conv), text, metadata)
        replies, payloads = replies_from_bot(output)
        for payload in payloads:
            replies += await self._act(conv, payload)
        if conv.state == "bot":  # the bot's own reasons for a person: failed twice, an angry or stuck citizen
            why = waiting.trigger(self._profile(conv), text, replies, await self.waiting.earlier_messages(conv, inbound))
            # Only when a person can answer now: a callback order is for citizens who asked for one.
            if (why is not None and await self.waiting.closed_reason(self._profile(conv), self.clock()) is None
                    and await self._set_state(conv, "bot", "waiting")):
                log.info("conversation %s: handed to a person (%s)", conv.id, why)
                replies += [Reply(waiting.TRIGGER_TEXT), *await self.waiting.entered(conv)]
        return await self._finish(
            conv, inbound, prefix + replies, status="done", payloads=payloads, delivered=delivered
        )

    async def _act(self, conv: Conversation, payload: dict[str, Any]) -> list[Reply]:
        """The bot's custom payloads: the only way it asks the gateway to do something. Their shape
        is checked here (common/payloads.py): a bad one is logged and the citizen gets an apology."""
        try:
            action = payloads.parse(payload)
        except payloads.PayloadError as exc:
            log.error("conversation %s: unusable payload from the bot: %s", conv.id, exc)
            return [Reply(INTAKE_FAILED_TEXT if "intake" in (payload if isinstance(payload, dict) else {})
                          else BAD_PAYLOAD_TEXT)]
        profile = self._profile(conv)
        if isinstance(action, payloads.Withdraw | payloads.Supplement):
            answer = await self._follow_up(conv, profile, action)
            return [Reply(answer.text, answer.buttons)]
        if isinstance(action, payloads.Intake):
            fields = action.fields
            if conv.channel == "sms" and not fields.get("phone"):
                fields = {**fields, "phone": conv.sender_id}  # the bot never asks an SMS sender for a number
            try:
                receipt = await create_from_intake(
                    self.transact, fields, profile, channel=conv.channel, conversation_id=conv.id, now=self.clock()
                )
            except IntakeError as exc:
                log.error("conversation %s: unusable intake from bot: %s", conv.id, exc)
                return [Reply(INTAKE_FAILED_TEXT)]
            log.info("work order %s for conversation %s (%s)", receipt.number, conv.id, receipt.outcome)
            self.metrics.work_orders.labels(profile.id, action.fields["category"], receipt.outcome).inc()
            return [Reply(receipt.citizen_text(), template=receipt.sms())]
        if isinstance(action, payloads.Handoff):
            if await self._set_state(conv, "bot", "waiting"):
                return await self.waiting.entered(conv)
        elif action.kind == "unknown":
            log.warning("conversation %s: payload the gateway does not know, kept only: %s", conv.id, sorted(payload))
        elif action.kind == "screened":
            reason = (payload.get("screened") or {}).get("reason")
            reason = reason if reason in SCREEN_KINDS else "other"
            # A referral is logged and counted; the payload itself stays on the message.
            log.info("conversation %s: referred (%s)%s", conv.id, reason, ", asked whether it is happening now"
                     if payload.get("ask") else "")
            self.metrics.screened.labels(profile.id, reason).inc()
        return []

    async def _set_state(self, conv: Conversation, current: str, new: str) -> bool:
        """Compare-and-set on who answers, so a turn never undoes an agent's claim made meanwhile."""
        since = self.clock() if new == "waiting" else None
        async with self.sessions() as session:
            done = await session.execute(
                update(Conversation).where(Conversation.id == conv.id, Conversation.state == current)
                .values(state=new, waiting_since=since)
            )
            await session.commit()
        if done.rowcount == 1:
            conv.state, conv.waiting_since = new, since
            if "waiting" in (current, new):  # joined the queue or left it ("取消")
                await self.waiting.queue_changed()
            return True
        async with self.sessions() as session:  # someone else changed it: read who holds it now
            row = (await session.execute(select(Conversation.state, Conversation.agent_id)
                                         .where(Conversation.id == conv.id))).first()
        if row is not None:
            conv.state, conv.agent_id = row
        return False

    async def _follow_up(
        self, conv: Conversation, profile: Profile, action: payloads.Withdraw | payloads.Supplement
    ) -> followups.Answer:
        """Withdraw or supplement one of the citizen's own orders. An SMS sender's number is proven by
        the channel; a phone typed anywhere only addresses a one-time code."""
        common: dict[str, Any] = {"conversation_id": conv.id, "number": action.number, "phone": action.phone,
                                  "sender_phone": self._sender_phone(conv), "channel": conv.channel,
                                  "now": self.clock()}
        if isinstance(action, payloads.Withdraw):
            answer = await followups.withdraw(self.sessions, profile, confirmed=action.confirmed, **common)
        else:
            answer = await followups.supplement(self.sessions, profile, text=action.text, **common)
        self._code_queued(answer)
        return answer

    @staticmethod
    def _sender_phone(conv: Conversation) -> str | None:
        return conv.sender_id if conv.channel == "sms" else None

    def _code_queued(self, answer: followups.Answer) -> None:
        if answer.queued and self.on_enqueued is not None:
            self.on_enqueued()  # the one-time code SMS goes now, not at the next poll

    async def _finish(
        self,
        conv: Conversation,
        inbound: Message,
        replies: list[Reply],
        *,
        status: str,
        payloads: list[dict[str, Any]] | None = None,
        delivered: bool = True,
    ) -> list[Reply]:
        via_outbox = conv.channel in self.outbox_channels
        now = self.clock()
        values: dict[str, Any] = {"status": status}
        if payloads:  # kept on the inbound message for statistics (screened reasons, KB hits)
            values["payload"] = {**(inbound.payload or {}), "bot": payloads}
        rows = [
            {
                "conversation_id": conv.id,
                "direction": "out",
                "text": reply.text,
                "payload": ({"buttons": list(reply.buttons)} if reply.buttons else {})
                | ({"template": reply.template} if reply.template else {}) or None,
                "status": "outbox" if via_outbox else "delivered" if delivered else "queued",
                "reply_to": inbound.id,
                "created_at": now,
            }
            for reply in replies
        ]

        def work(session: Session) -> None:  # bulk statements: no ORM unit of work per reply
            session.execute(update(Message).where(Message.id == inbound.id).values(**values))
            if rows and via_outbox:
                ids = session.scalars(insert(Message).returning(Message.id, sort_by_parameter_order=True), rows).all()
                for reply, out_id in zip(replies, ids, strict=True):
                    enqueue(
                        session,
                        channel=conv.channel,
                        recipient=conv.sender_id,
                        body={**(reply.template or {}), "text": reply.text, "buttons": list(reply.buttons)},
                        dedupe_key=f"message:{out_id}",
                        conversation_id=conv.id,
                        message_id=out_id,
                        not_before=now,
                    )
            elif rows:
                session.execute(insert(Message), rows)

        await self.transact(work)
        self._wake_outbox(conv, bool(replies))
        return replies

    async def _replies_for_duplicate(self, msg: InboundMessage) -> list[Reply]:
        """A retried message gets the answer it already got, and is not processed twice."""
        async with self.sessions() as session:
            inbound = await session.scalar(
                select(Message)
                .join(Conversation)
                .where(
                    Conversation.channel == msg.channel,
                    Conversation.sender_id == msg.sender_id,
                    Message.direction == "in",
                    Message.provider_message_id == msg.message_id,
                )
            )
            if inbound is None:
                return []
            rows = await session.scalars(select(Message).where(Message.reply_to == inbound.id).order_by(Message.id))
            return [Reply(r.text, tuple((r.payload or {}).get("buttons", ()))) for r in rows]

    async def retry_pending(self) -> int:
        """Send messages kept while the bot was down, oldest first; returns how many went through."""
        if not await self.bot.healthy():
            return 0
        async with self.sessions() as session:
            pending = (
                await session.scalars(select(Message).where(Message.status == "pending_bot").order_by(Message.id))
            ).all()
        done = 0
        for inbound in pending:
            async with self.sessions() as session:
                conv = await session.get(Conversation, inbound.conversation_id)
            assert conv is not None
            async with self.coordinator.lock(f"conv:{conv.channel}:{conv.sender_id}"):
                async with self.sessions() as session:
                    current = await session.get(Message, inbound.id)
                    if current is None or current.status != "pending_bot":
                        continue  # another replica took it
                before = (current.payload or {}).get("failed_attempts", 0)
                try:
                    replies = await self._isolated(
                        conv, current, self._ask_bot(conv, current, current.text, delivered=False), delivered=False
                    )
                except BotUnavailable:
                    return done
                if (current.payload or {}).get("failed_attempts", 0) != before and not replies:
                    continue  # failed this time; tried again next pass, at most MAX_ATTEMPTS times
            done += 1
            await self._push_later(conv, [inbound.id], replies)
        return done

    async def _push_later(self, conv: Conversation, inbound_ids: list[int], replies: list[Reply]) -> None:
        """Replies produced after the citizen's request ended (the bot came back, a restart recovered
        the message) go to their open page; pushed, they are not released again with the next message."""
        if not replies or self.notify is None or not await self.notify(conv.channel, conv.sender_id, replies):
            return
        async with self.sessions() as session:
            await session.execute(
                update(Message)
                .where(Message.reply_to.in_(inbound_ids), Message.status == "queued")
                .values(status="delivered")
            )
            await session.commit()
