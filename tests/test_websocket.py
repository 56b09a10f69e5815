"""The chat page's WebSocket handler (channels/web.py) with the real bot: reply frames then a "done"
frame naming the message, a resent message id answered from what was kept, and error frames that
leave the socket open."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from aiohttp import WSMsgType
from sqlalchemy import func, select

from common.messages import Reply
from storage.conversations import Conversation, Message
from tests.conftest import router_of

pytestmark = pytest.mark.rasa
FIRST = "我们小区门口的路灯坏了好几个星期了，晚上黑乎乎的老人孩子出门很不方便"


async def turn(ws, frame: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # noqa: ANN001
    """Send one frame; the reply frames up to the frame that ends the turn ("done" or "error")."""
    await ws.send_json(frame)
    replies = []
    while True:
        answer = await asyncio.wait_for(ws.receive_json(), 60)
        if answer["type"] != "reply":
            return replies, answer
        replies.append(answer)


async def test_a_turn_over_the_websocket_and_a_resent_id(gateway) -> None:  # noqa: ANN001
    sender = f"ws-{uuid.uuid4().hex[:8]}"
    ws = await gateway.ws_connect(f"/ws?sender={sender}")
    replies, end = await turn(ws, {"text": FIRST, "message_id": "w-1"})
    assert end == {"type": "done", "message_id": "w-1"}
    text = "\n".join(r["text"] for r in replies)
    assert "您的诉求属于" in text and all(set(r) == {"type", "text", "buttons"} for r in replies)
    again, end = await turn(ws, {"text": FIRST, "message_id": "w-1"})  # the page retried after a drop
    assert again == replies and end == {"type": "done", "message_id": "w-1"}
    async with router_of(gateway).sessions() as session:
        kept = await session.scalar(select(func.count()).select_from(Message).join(Conversation).where(
            Conversation.sender_id == sender, Message.direction == "in"))
    assert kept == 1  # answered from what was kept, not processed twice
    await ws.close()


async def test_error_frames_name_the_problem_and_the_socket_stays_open(gateway) -> None:  # noqa: ANN001
    ws = await gateway.ws_connect(f"/ws?sender=ws-bad-{uuid.uuid4().hex[:6]}")
    for raw, error in [
        ("not json", "not valid UTF-8 JSON"),
        (json.dumps(["a", "list"]), "must be an object"),
        (json.dumps({"text": 5}), "string 'text'"),
        (json.dumps({"text": "hi", "message_id": 7}), "message_id must be a string"),
    ]:
        await ws.send_str(raw)
        answer = await asyncio.wait_for(ws.receive_json(), 10)
        assert answer["type"] == "error" and error in answer["error"], (raw, answer)
    await ws.send_bytes(b"\x00binary")  # not a text frame: ignored, nothing answered
    replies, end = await turn(ws, {"text": "   "})
    assert [r["text"] for r in replies] == ["请输入您要反映的内容，例如发生了什么事、在什么地方。"]
    assert end == {"type": "done", "message_id": None}
    await ws.close()


async def test_a_socket_without_a_valid_sender_is_refused(gateway) -> None:  # noqa: ANN001
    for query in ("", "?sender=", "?sender=has%20space"):
        resp = await gateway.get(f"/ws{query}", headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                                         "Sec-WebSocket-Version": "13",
                                                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert resp.status == 400 and "sender" in await resp.text()


async def test_closing_the_page_forgets_its_socket(gateway) -> None:  # noqa: ANN001
    """A closed page gets no push (the reply waits for the citizen's next message instead)."""
    sender = f"ws-gone-{uuid.uuid4().hex[:6]}"
    ws = await gateway.ws_connect(f"/ws?sender={sender}")
    await ws.close()
    assert ws.closed and (await ws.receive()).type == WSMsgType.CLOSED
    await asyncio.sleep(0.1)  # the handler's finally has run
    assert await router_of(gateway).notify("web", sender, [Reply("迟到的回复")]) is False
