"""The bot's payloads at the gateway's boundary: every shape the action server sends is read, and a
payload without its shape is logged and answered with an apology instead of crashing the turn."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import select

from common import payloads
from common.messages import InboundMessage
from gateway.coordination import LocalCoordinator
from gateway.router import BAD_PAYLOAD_TEXT, INTAKE_FAILED_TEXT, Router
from handoff.models import WorkOrder
from profiles import load as load_profile
from storage.conversations import Conversation, Message

INTAKE: payloads.IntakeFields = {
    "intake_id": "a" * 32, "profile": "jiyuan", "category": "complaint", "urgent": False, "urgent_rule": None,
    "real_name_rule": None, "confidential": False, "id_number": None, "content": "路灯坏了一个星期",
    "event_time": "上周", "place": "济源市天坛路", "phone": "13800001234", "name": "张三", "anonymous": False,
}


def test_the_shapes_the_action_server_sends_are_read() -> None:
    assert payloads.parse({"intake": INTAKE}) == payloads.Intake(INTAKE)
    assert payloads.parse({"withdraw": {"number": "JY20261123000042", "phone": None, "confirmed": True}}) == (
        payloads.Withdraw("JY20261123000042", None, True))
    assert payloads.parse({"supplement": {"number": None, "text": None}}) == payloads.Supplement(None, None, "")
    assert payloads.parse({"handoff": "agent"}) == payloads.Handoff("agent")
    assert payloads.parse({"screened": {"reason": "emergency", "article": "第十条", "confidence": 1.0}}) == (
        payloads.Informational("screened"))
    assert payloads.parse({"cancelled": True}) == payloads.Informational("cancelled")
    assert payloads.parse({"something_newer": 1}) == payloads.Informational("unknown")


@pytest.mark.parametrize(("payload", "says"), [
    ("intake", "must be an object"),
    ({"intake": "not an object"}, "intake must be an object"),
    ({"intake": {**INTAKE, "intake_id": None}}, "intake.intake_id must be a non-empty string"),
    ({"intake": {**INTAKE, "phone": 13800001234}}, "intake.phone must be a string or null, not int"),
    ({"intake": {**INTAKE, "urgent": "yes"}}, "intake.urgent must be true or false"),
    ({"withdraw": {"number": 42, "confirmed": True}}, "withdraw.number must be a string or null"),
    ({"withdraw": {"number": None, "confirmed": "yes"}}, "withdraw.confirmed must be true or false"),
    ({"supplement": ["text"]}, "supplement must be an object, not list"),
    ({"handoff": "robot"}, 'handoff must be "agent"'),
])
def test_a_payload_without_its_shape_says_what_is_wrong(payload: Any, says: str) -> None:
    with pytest.raises(payloads.PayloadError, match=says.replace("(", r"\(")):
        payloads.parse(payload)


class StandInBot:
    """Answers every message with one text and the given custom payload, as Rasa's REST channel would."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    async def send(self, sender: str, text: str, metadata: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"recipient_id": sender, "text": "好的"}, {"recipient_id": sender, "custom": self.payload}]

    async def healthy(self) -> bool:
        return True


@pytest.mark.parametrize(("payload", "apology"), [
    ({"withdraw": {"number": 42, "phone": None, "confirmed": True}}, BAD_PAYLOAD_TEXT),
    ({"supplement": {"number": None, "phone": ["13800001234"], "text": "补充"}}, BAD_PAYLOAD_TEXT),
    ({"handoff": "robot"}, BAD_PAYLOAD_TEXT),
    ({"intake": {**INTAKE, "intake_id": ""}}, INTAKE_FAILED_TEXT),
    ({"intake": {**INTAKE, "anonymous": "no"}}, INTAKE_FAILED_TEXT),
])
async def test_a_bad_payload_is_logged_and_the_citizen_gets_an_apology(
    sessions, payload: dict[str, Any], apology: str, caplog: pytest.LogCaptureFixture  # noqa: ANN001
) -> None:
    router = Router(sessions, StandInBot(payload), LocalCoordinator(), load_profile("jiyuan"))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="gateway.router"):
        replies = await router.handle(InboundMessage("web", "citizen-1", "我要反映问题", message_id="m1"))
    assert [r.text for r in replies] == ["好的", apology]
    assert any("unusable payload from the bot" in r.getMessage() for r in caplog.records)
    async with sessions() as session:
        assert await session.scalar(select(WorkOrder.id)) is None
        conv = await session.scalar(select(Conversation))
        inbound = await session.scalar(select(Message).where(Message.direction == "in"))
    assert conv is not None and conv.state == "bot"
    assert inbound is not None and inbound.status == "done" and inbound.payload == {"bot": [payload]}


async def test_a_payload_the_gateway_does_not_know_is_kept_not_apologised_for(
    sessions, caplog: pytest.LogCaptureFixture  # noqa: ANN001
) -> None:
    router = Router(sessions, StandInBot({"flagged": {"why": "test"}}), LocalCoordinator(), load_profile("jiyuan"))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="gateway.router"):
        replies = await router.handle(InboundMessage("web", "citizen-2", "你好", message_id="m2"))
    assert [r.text for r in replies] == ["好的"]
    assert any("does not know" in r.getMessage() for r in caplog.records)


async def test_a_good_intake_payload_still_makes_a_work_order(sessions) -> None:  # noqa: ANN001
    router = Router(sessions, StandInBot({"intake": INTAKE}), LocalCoordinator(), load_profile("jiyuan"))  # type: ignore[arg-type]
    replies = await router.handle(InboundMessage("web", "citizen-3", "确认提交", message_id="m3"))
    assert "工单号：JY" in replies[-1].text
    async with sessions() as session:
        order = await session.scalar(select(WorkOrder))
    assert order is not None and order.facts["place"] == "济源市天坛路" and order.contact_phone == "13800001234"
