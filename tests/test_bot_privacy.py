"""What Rasa holds about citizens (#14): its HTTP API answers only the gateway's token, and a
citizen's tracker is named by a keyed HMAC, not an unsalted hash of their phone number."""

from __future__ import annotations

import hashlib
import uuid

import aiohttp
import pytest

from gateway.bot_client import bot_sender, use_tracker_key
from gateway.config import Settings
from storage.conversations import Conversation
from tests.conftest import RASA_TOKEN, Chat

PHONE = "13800001234"


def test_tracker_keys_are_keyed_hmacs_of_the_sender() -> None:
    conv = Conversation(channel="sms", sender_id=PHONE)
    try:
        use_tracker_key(b"one secret")
        first = bot_sender(conv)
        use_tracker_key(b"another secret")
        assert bot_sender(conv) != first  # the key decides: no one can compute it from the phone alone
        for digest in (hashlib.sha256(f"sms:{PHONE}".encode()).hexdigest(), hashlib.sha256(PHONE.encode()).hexdigest()):
            assert digest[:24] not in first and digest[:32] != first
    finally:
        use_tracker_key(Settings().tracker_key())


def test_the_tracker_key_is_kept_across_starts() -> None:
    assert Settings().tracker_key() == Settings().tracker_key() and len(Settings().tracker_key()) >= 32
    assert Settings(tracker_secret="from-config").tracker_key() == b"from-config"


@pytest.mark.rasa
async def test_rasas_api_answers_only_with_the_token(gateway, rasa_url: str) -> None:  # noqa: ANN001
    sender = f"p-{uuid.uuid4().hex[:10]}"
    await Chat(gateway, sender).say(f"小区门口路灯坏了，我的电话{PHONE}")
    key = bot_sender(Conversation(channel="web", sender_id=sender))
    async with aiohttp.ClientSession() as http:
        for params in ({}, {"token": "wrong"}):
            async with http.get(f"{rasa_url}/conversations/{key}/tracker", params=params) as resp:
                assert resp.status in (401, 403), resp.status
            async with http.post(f"{rasa_url}/model/parse", json={"text": "路灯坏了"}, params=params) as resp:
                assert resp.status in (401, 403), resp.status
        async with http.get(f"{rasa_url}/conversations/{key}/tracker", params={"token": RASA_TOKEN}) as resp:
            assert resp.status == 200 and any(e["event"] == "user" for e in (await resp.json())["events"])
