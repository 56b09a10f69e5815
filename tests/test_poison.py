"""A message whose answer raises (the bot's output of the wrong shape) is tried a bounded number of
times, then set aside as failed with an apology; it never stops the others or crash recovery."""

from __future__ import annotations

import logging

from sqlalchemy import select

from common.messages import InboundMessage
from gateway.router import FAILED_TEXT, FAILING_TEXT, MAX_ATTEMPTS, requeue_failed
from storage.conversations import Conversation, Message
from tests.conftest import Chat, gateway_client, metrics, router_of, settings_for
from tests.wechat_api_server import SlowBot

POISON = "路灯坏了好几天没人修"
POISON_OUTPUT = ["not a message object"]  # a list, as Rasa answers, of something that is no message


async def statuses(client, sender: str) -> list[tuple[str, str]]:  # noqa: ANN001
    async with router_of(client).sessions() as session:
        rows = await session.execute(
            select(Message.direction, Message.status, Message.text).join(Conversation)
            .where(Conversation.sender_id == sender).order_by(Message.id))
        return [(d, st if d == "in" else t) for d, st, t in rows]


async def test_poison_message_is_capped_and_does_not_stop_recovery(tmp_path, bot: tuple[SlowBot, str], caplog) -> None:
    stand_in, url = bot
    stand_in.outputs[POISON] = POISON_OUTPUT
    async with gateway_client(settings_for(tmp_path, url)) as client:
        router = router_of(client)
        # Kept before a "crash": the poison first, then another citizen's message.
        assert await router.accept(InboundMessage("web", "poisoned-13800001111", POISON, message_id="p-1"))
        assert await router.accept(InboundMessage("web", "healthy", "小区停水了", message_id="h-1"))

        with caplog.at_level(logging.INFO):
            await router.recover_received(older_than_s=0)
        assert (await statuses(client, "healthy"))[0] == ("in", "done")  # not stuck behind the poison
        assert await statuses(client, "poisoned-13800001111") == [("in", "received")]

        for _ in range(MAX_ATTEMPTS + 2):
            await router.recover_received(older_than_s=0)
        assert stand_in.messages.count(POISON) == MAX_ATTEMPTS  # not re-sent to the bot every pass
        assert await statuses(client, "poisoned-13800001111") == [("in", "failed"), ("out", FAILED_TEXT)]
        failed = {k: v for k, v in (await metrics(client)).items() if k[0] == "hotline_failed_messages_total"}
        assert failed == {("hotline_failed_messages_total", (("channel", "web"),)): 1.0}

        failures = [r.getMessage() for r in caplog.records if "answering message" in r.getMessage()]
        assert len(failures) >= 1 and "AttributeError" in failures[0]
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert POISON not in logged and "13800001111" not in logged

        # The bot is fixed; an operator retries the failed message (`hotline retry-failed`).
        del stand_in.outputs[POISON]
        assert await requeue_failed(router.sessions) == 1
        await router.recover_received(older_than_s=0)
        answered = await statuses(client, "poisoned-13800001111")
        assert answered[0] == ("in", "done") and answered[-1] == ("out", "您的留言已收到，请问事情发生在什么地方？")


async def test_poison_in_a_live_turn_gets_an_apology_then_a_final_answer(tmp_path, bot: tuple[SlowBot, str]) -> None:
    stand_in, url = bot
    stand_in.outputs[POISON] = POISON_OUTPUT
    async with gateway_client(settings_for(tmp_path, url)) as client:
        replies = await Chat(client, "live").say(POISON)
        assert Chat.text(replies) == FAILING_TEXT
        for _ in range(MAX_ATTEMPTS):
            await router_of(client).recover_received(older_than_s=0)
        assert await statuses(client, "live") == [("in", "failed"), ("out", FAILED_TEXT)]
        # The citizen can go on: the next message is answered.
        assert "什么地方" in Chat.text(await Chat(client, "live").say("还有噪音问题", message_id="live-2"))


async def test_poison_kept_while_the_bot_was_down_does_not_stop_the_retry(tmp_path, bot: tuple[SlowBot, str]) -> None:
    stand_in, url = bot
    stand_in.outputs[POISON] = POISON_OUTPUT
    async with gateway_client(settings_for(tmp_path, url)) as client:
        router = router_of(client)
        stand_in.down = True
        assert "已保存" in Chat.text(await Chat(client, "pending-poison").say(POISON))
        assert "已保存" in Chat.text(await Chat(client, "pending-ok").say("垃圾没人清运"))
        stand_in.down = False

        assert await router.retry_pending() == 1  # the healthy one went through, behind the poison
        assert (await statuses(client, "pending-ok"))[0] == ("in", "done")
        for _ in range(MAX_ATTEMPTS + 1):
            await router.retry_pending()
        assert stand_in.messages.count(POISON) == MAX_ATTEMPTS
        assert (await statuses(client, "pending-poison"))[0] == ("in", "failed")
        assert (await statuses(client, "pending-poison"))[-1] == ("out", FAILED_TEXT)
