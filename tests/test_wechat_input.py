"""The WeChat push endpoint over HTTP against a gateway whose bot is down: the official vectors,
every bad input (403/400/413/404, nothing stored, never a 500), media and events, and delivery
through the local WeChat API server (token cache and refresh, 45015/45047 held with the fallback)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from wechatpy.crypto import PrpCrypto

from channels.wechat.models import WeChatToken
from gateway.botproc import free_port
from gateway.logs import RedactingFilter
from gateway.router import MEDIA_TEXT, RESENT_PREFIX, UNREADABLE_TEXT
from storage.conversations import Message
from storage.outbox import OutboxItem
from tests.conftest import gateway_client, router_of, settings_for
from tests.wechat_api_server import (
    COMPAT,
    MINI,
    OFFICIAL,
    SlowBot,
    WeChatAPIServer,
    WeChatUser,
    apps_setting,
    settle,
    sha1_sign,
    signed_push,
)
from tests.wechat_vectors import V1_ENCRYPT, V1_SECURE_QUERY

V1_SECURE_BODY = json.dumps({"ToUserName": "gh_97417a04a28d", "Encrypt": V1_ENCRYPT}).encode()
IMAGE_REPLY = MEDIA_TEXT.format(label="图片")


@pytest.fixture
async def gw(tmp_path: Path, wechat_api: WeChatAPIServer) -> AsyncIterator[TestClient]:
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", wechat_apps=apps_setting(),
                            wechat_api_base=wechat_api.url, outbox_interval_s=0.2)
    async with gateway_client(settings) as client:
        yield client


async def rows(client: TestClient, model=Message) -> list:  # noqa: ANN001
    async with router_of(client).sessions() as session:
        key = next(iter(model.__table__.primary_key.columns))
        return list((await session.scalars(select(model).order_by(key))).all())


# --- the official vectors over HTTP ---------------------------------------------------------------

async def test_url_verification_returns_echostr_as_is(gw: TestClient) -> None:
    query = {"signature": "f464b24fc39322e44b38aa78f5edd27bd1441696", "timestamp": "1714036504",
             "nonce": "1514711492", "echostr": "4375120948345356249"}
    resp = await gw.get("/wechat/mini", params=query)
    assert (resp.status, await resp.text()) == (200, "4375120948345356249")
    assert (await gw.get("/wechat/mini", params=query | {"signature": "0" * 40})).status == 403
    assert (await gw.get("/wechat/mini", params={"echostr": "1"})).status == 403
    assert (await gw.get("/wechat/nosuchapp", params=query)).status == 404
    assert (await gw.get("/wechat/mini", params=query | {"echostr": ""})).status == 400


@pytest.fixture
async def gw_2024(tmp_path: Path, wechat_api: WeChatAPIServer) -> AsyncIterator[TestClient]:
    """A gateway that takes the official vectors' 2024 timestamps as fresh (a window of ~30 years)."""
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", wechat_apps=apps_setting(),
                            wechat_api_base=wechat_api.url, outbox_interval_s=0.2, wechat_max_skew_s=10**9)
    async with gateway_client(settings) as client:
        yield client


async def test_official_plaintext_and_secure_json_posts_are_acknowledged_and_kept(gw_2024: TestClient) -> None:
    gw = gw_2024
    plain = json.dumps({"ToUserName": "gh_97417a04a28d", "FromUserName": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY",
                        "CreateTime": 1714037059, "MsgType": "event", "Event": "debug_demo",
                        "debug_str": "hello world"}).encode()
    query = {"signature": "899cf89e464efb63f54ddac96b0a0a235f53aa78", "timestamp": "1714037059", "nonce": "486452656"}
    resp = await gw.post("/wechat/v1plain", params=query, data=plain)
    assert (resp.status, await resp.text()) == (200, "success")
    resp = await gw.post("/wechat/mini", params=V1_SECURE_QUERY, data=V1_SECURE_BODY)
    assert (resp.status, await resp.text()) == (200, "success")
    await settle(gw)
    kept = await rows(gw)
    assert [(m.provider_message_id, m.status, m.payload["attachments"]) for m in kept] == [
        ("debug_demo@1714037059", "done", [{"type": "event", "event": "debug_demo"}]),
        ("debug_demo@1714112445", "done", [{"type": "event", "event": "debug_demo"}]),
    ]


# --- bad input -----------------------------------------------------------------------------------

def tamper(query: dict[str, str], **changes: str | None) -> dict[str, str]:
    out = dict(query) | {k: v for k, v in changes.items() if v is not None}
    return {k: v for k, v in out.items() if changes.get(k, "") is not None}


@pytest.mark.parametrize(
    ("app", "query", "body", "status", "error"),
    [
        ("mini", tamper(V1_SECURE_QUERY, signature="0" * 40), V1_SECURE_BODY, 403, "signature"),
        ("mini", tamper(V1_SECURE_QUERY, signature=None), V1_SECURE_BODY, 403, "required"),
        ("mini", tamper(V1_SECURE_QUERY, msg_signature="1" * 40), V1_SECURE_BODY, 403, "msg_signature"),
        ("mini", tamper(V1_SECURE_QUERY, msg_signature=None), V1_SECURE_BODY, 403, "msg_signature"),
        ("mini", tamper(V1_SECURE_QUERY, encrypt_type=None), V1_SECURE_BODY, 403, "secure mode"),
        ("mini", V1_SECURE_QUERY, V1_SECURE_BODY.replace(b'"Encrypt": "+', b'"Encrypt": "-'), 403, "msg_signature"),
        ("wrongkey", V1_SECURE_QUERY, V1_SECURE_BODY, 400, "decrypt"),
        ("mini", V1_SECURE_QUERY, b'{"Encrypt": ', 400, "JSON"),
        ("mini", V1_SECURE_QUERY, b"[1, 2]", 400, "object"),
        ("mini", V1_SECURE_QUERY, b'{"ToUserName": "x"}', 400, "Encrypt"),
        ("mini", tamper(V1_SECURE_QUERY, encrypt_type="rsa"), V1_SECURE_BODY, 400, "encrypt_type"),
        ("nosuchapp", V1_SECURE_QUERY, V1_SECURE_BODY, 404, "unknown"),
    ],
)
async def test_refused_pushes_store_nothing(gw: TestClient, app: str, query: dict[str, str], body: bytes,
                                            status: int, error: str) -> None:
    resp = await gw.post(f"/wechat/{app}", params=query, data=body)
    assert resp.status == status
    assert error in (await resp.json())["error"]
    assert await rows(gw) == []


async def test_tampered_ciphertext_with_a_valid_msg_signature_is_400(gw: TestClient) -> None:
    """Someone who knows the Token but not the EncodingAESKey."""
    tampered = "B" + V1_ENCRYPT[1:]
    query = V1_SECURE_QUERY | {"msg_signature": sha1_sign("AAAAA", "1714112445", "415670741", tampered)}
    resp = await gw.post("/wechat/mini", params=query, data=json.dumps({"Encrypt": tampered}))
    assert resp.status == 400 and "decrypt" in (await resp.json())["error"]
    assert await rows(gw) == []


XXE = b'<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><ToUserName>a</ToUserName>' \
      b'<FromUserName>oU</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType>' \
      b'<Content>&xxe;</Content><MsgId>1</MsgId></xml>'
LAUGHS = b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">' + b"".join(
    f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">'.encode() for i in range(1, 10)
) + b"]><xml><FromUserName>oU</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType>" \
    b"<Content>&lol9;</Content><MsgId>1</MsgId></xml>"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (XXE, "DTD"),
        (LAUGHS, "DTD"),
        (b"<xml><Content>half", "well-formed"),
        (b"<xml><FromUserName>oU</FromUserName><CreateTime>1</CreateTime><Content>x</Content></xml>", "MsgType"),
        (b"<html/>", "root"),
    ],
)
async def test_hostile_xml_in_plaintext_mode(gw: TestClient, body: bytes, error: str) -> None:
    query, _ = signed_push(OFFICIAL, {})
    resp = await gw.post("/wechat/oa", params=query, data=body)
    assert resp.status == 400 and error in (await resp.json())["error"]
    assert await rows(gw) == []


async def test_hostile_xml_inside_the_ciphertext(gw: TestClient) -> None:
    """An entity bomb that got past the signature (a leaked key) is still not expanded."""
    query, _ = signed_push(COMPAT, {})
    encrypt = PrpCrypto(base64.b64decode(COMPAT.aes_key + "=")).encrypt(LAUGHS, COMPAT.appid).decode()
    query["msg_signature"] = sha1_sign(COMPAT.token, query["timestamp"], query["nonce"], encrypt)
    query["encrypt_type"] = "aes"
    resp = await gw.post("/wechat/compat", params=query, data=f"<xml><Encrypt>{encrypt}</Encrypt></xml>")
    assert resp.status == 400 and "DTD" in (await resp.json())["error"]
    assert await rows(gw) == []


async def test_body_over_the_limit_is_refused_unread(gw: TestClient) -> None:
    query, _ = signed_push(OFFICIAL, {})
    big = b"<xml><Content>" + b"x" * 70_000 + b"</Content></xml>"
    resp = await gw.post("/wechat/oa", params=query, data=big)
    assert resp.status == 413

    async def chunks():  # noqa: ANN202 - no Content-Length: the limit must hold while streaming
        for _ in range(100):
            yield b"x" * 1000

    resp = await gw.post("/wechat/oa", params=query, data=chunks())
    assert resp.status == 413
    assert await rows(gw) == []


async def test_logs_carry_no_openid(gw: TestClient, wechat_api: WeChatAPIServer) -> None:
    """Through the production handler and access log (gateway.logs): the secure-mode push URL's query
    carries the openid and is never printed; refusals and deliveries log too."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        user = WeChatUser(gw, wechat_api, MINI)
        await user.push(user.fields("image", PicUrl="http://mmbiz.qpic.cn/1", MediaId="m1"))
        query, body = signed_push(MINI, user.fields("text", Content="x"))
        await gw.post("/wechat/mini", params=query | {"msg_signature": "0" * 40}, data=body)
        await user.replies()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    text = stream.getvalue()
    assert '"POST /wechat/mini" 200' in text and '"POST /wechat/mini" 403' in text  # the access log lines
    assert user.openid not in text and "openid=" not in text and "signature=" not in text


# --- message kinds and delivery ------------------------------------------------------------------

async def test_image_is_kept_as_attachment_and_answered_without_the_bot(gw: TestClient,
                                                                        wechat_api: WeChatAPIServer) -> None:
    user = WeChatUser(gw, wechat_api, MINI)
    await user.push(user.fields("image", PicUrl="http://mmbiz.qpic.cn/abc", MediaId="media-1"))
    assert await user.replies() == IMAGE_REPLY
    [inbound] = [m for m in await rows(gw) if m.direction == "in"]
    assert inbound.payload["attachments"] == [{"type": "image", "media_id": "media-1",
                                               "pic_url": "http://mmbiz.qpic.cn/abc"}]
    await user.push(user.fields("voice", MediaId="media-2", Format="amr"))
    assert await user.replies() == MEDIA_TEXT.format(label="语音")
    await user.push(user.fields("link", Title="看看", Url="http://example.invalid/"))
    assert await user.replies() == UNREADABLE_TEXT
    await user.push(user.fields("event", Event="kf_close_session"))
    assert await user.replies() == ""
    assert len([m for m in await rows(gw) if m.direction == "in"]) == 4


async def test_retries_three_times_give_one_reply(gw: TestClient, wechat_api: WeChatAPIServer) -> None:
    user = WeChatUser(gw, wechat_api, OFFICIAL)
    fields = user.fields("image", PicUrl="http://mmbiz.qpic.cn/r", MediaId="m-retry")
    await user.push(fields, times=3)
    assert await user.replies() == IMAGE_REPLY
    query, body = signed_push(OFFICIAL, fields)  # the same push again, at the same moment, three times
    responses = await asyncio.gather(*(gw.post("/wechat/oa", params=query, data=body) for _ in range(3)))
    assert [await r.text() for r in responses] == ["success"] * 3
    assert await user.replies() == ""
    assert len([m for m in await rows(gw) if m.direction == "in"]) == 1


async def test_a_push_signed_long_ago_is_refused(gw: TestClient, wechat_api: WeChatAPIServer) -> None:
    user = WeChatUser(gw, wechat_api, OFFICIAL)
    query, body = signed_push(OFFICIAL, user.fields("text", Content="路灯坏了"), timestamp=str(int(time.time()) - 3600))
    resp = await gw.post("/wechat/oa", params=query, data=body)
    assert resp.status == 403 and "window" in (await resp.json())["error"]
    assert await rows(gw) == []


@pytest.mark.parametrize("spec", [OFFICIAL, MINI], ids=["plaintext", "secure"])
async def test_a_captured_signature_does_not_sign_another_push(gw: TestClient, wechat_api: WeChatAPIServer,
                                                               spec) -> None:  # noqa: ANN001
    user = WeChatUser(gw, wechat_api, spec)
    query, body = signed_push(spec, user.fields("text", Content="路灯坏了"))
    assert (await gw.post(f"/wechat/{spec.name}", params=query, data=body)).status == 200
    assert (await gw.post(f"/wechat/{spec.name}", params=query, data=body)).status == 200  # WeChat's retry
    forged_fields = user.fields("text", Content="我要撤回我的投诉")
    if spec.mode == "plaintext":  # the signature does not cover the body: only the nonce check stops it
        forged = (query, signed_push(spec, forged_fields)[1])
    else:  # a secure push re-encrypted by someone holding the key, under the captured timestamp and nonce
        forged = signed_push(spec, forged_fields, timestamp=query["timestamp"], nonce=query["nonce"])
    resp = await gw.post(f"/wechat/{spec.name}", params=forged[0], data=forged[1])
    assert resp.status == 403 and "nonce" in (await resp.json())["error"]
    assert [m.text for m in await rows(gw) if m.direction == "in"] == ["路灯坏了"]


async def test_token_is_cached_in_the_database_and_refreshed_on_42001_and_40001(
    gw: TestClient, wechat_api: WeChatAPIServer
) -> None:
    user = WeChatUser(gw, wechat_api, MINI)
    image = {"PicUrl": "http://mmbiz.qpic.cn/t", "MediaId": "m"}
    await user.push(user.fields("image", **image))
    await user.push(user.fields("image", **image))
    assert await user.replies() == f"{IMAGE_REPLY}\n{IMAGE_REPLY}"
    assert len(wechat_api.token_requests) == 1  # fetched once, then cached
    [cached] = await rows(gw, WeChatToken)
    assert cached.appid == MINI.appid
    wechat_api.expire_tokens()
    await user.push(user.fields("image", **image))
    assert await user.replies() == IMAGE_REPLY
    wechat_api.revoke_tokens()
    await user.push(user.fields("image", **image))
    assert await user.replies() == IMAGE_REPLY
    assert len(wechat_api.token_requests) == 3
    assert all(r["force_refresh"] is False for r in wechat_api.token_requests)


@pytest.mark.parametrize("code", [45015, 45047])
async def test_outside_the_window_the_reply_is_held_and_shown_next_time(
    gw: TestClient, wechat_api: WeChatAPIServer, code: int
) -> None:
    user = WeChatUser(gw, wechat_api, MINI)
    wechat_api.scripted = [code]
    await user.push(user.fields("image", PicUrl="http://mmbiz.qpic.cn/h", MediaId="m-held"))
    assert await user.replies() == ""
    [held] = [i for i in await rows(gw, OutboxItem) if i.channel == "wechat:mini"]
    assert held.status == "held" and str(code) in held.last_error
    [out] = [m for m in await rows(gw) if m.direction == "out"]
    assert out.status == "queued"  # the profile's "marker": shown when the citizen next writes
    await user.push(user.fields("voice", MediaId="m-v", Format="amr"))
    assert await user.replies() == f"{RESENT_PREFIX}{IMAGE_REPLY}\n{MEDIA_TEXT.format(label='语音')}"
    assert not [i for i in await rows(gw, OutboxItem) if i.channel == "sms"]  # no work order, no phone


async def test_a_provider_outage_is_retried_not_lost(gw: TestClient, wechat_api: WeChatAPIServer) -> None:
    user = WeChatUser(gw, wechat_api, MINI)
    wechat_api.scripted = [-1]  # 系统繁忙
    await user.push(user.fields("image", PicUrl="http://mmbiz.qpic.cn/o", MediaId="m-o"))
    await settle(gw)
    [item] = [i for i in await rows(gw, OutboxItem) if i.channel == "wechat:mini"]
    assert item.status == "pending" and item.attempts == 1
    for _ in range(100):  # the worker retries after its backoff (2 s)
        if wechat_api.to(user.openid):
            break
        await asyncio.sleep(0.1)
    assert wechat_api.to(user.openid) == [IMAGE_REPLY]


async def test_the_push_is_acknowledged_before_a_slow_bot_answers(tmp_path: Path,
                                                                   wechat_api: WeChatAPIServer) -> None:
    """A stand-in speaking Rasa's REST webhook takes 3 s: the push is answered long before."""
    bot = SlowBot()
    bot.delay_s = 3.0
    runner, bot_url = await bot.start()
    try:
        settings = settings_for(tmp_path, bot_url, wechat_apps=apps_setting(), wechat_api_base=wechat_api.url,
                                outbox_interval_s=0.2)
        async with gateway_client(settings) as client:
            users = [WeChatUser(client, wechat_api, MINI) for _ in range(10)]
            await asyncio.gather(*(u.push(u.fields("text", Content="天坛路的路灯坏了")) for u in users))
            assert max(ack for u in users for ack in u.ack_ms) < 1500  # well under the bot's 3 s
            assert not wechat_api.sent  # the replies come later, from the bot
            await settle(client)
            assert [len(wechat_api.to(u.openid)) for u in users] == [1] * 10
            assert bot.calls == 10
    finally:
        await runner.cleanup()


async def test_replicas_without_redis_still_store_a_push_once(tmp_path: Path, wechat_api: WeChatAPIServer) -> None:
    """Each replica's in-process claim lets the same push through; the database's unique key stops the
    second copy, and the other messages of that replica's batch are kept."""
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", wechat_apps=apps_setting(),
                            wechat_api_base=wechat_api.url, outbox_interval_s=0.2)
    wechat_api.enforce_window = False
    async with gateway_client(settings) as a, gateway_client(settings) as b:
        user = WeChatUser(a, wechat_api, OFFICIAL)
        dup = user.fields("image", PicUrl="http://mmbiz.qpic.cn/d", MediaId="m-dup")
        same = signed_push(OFFICIAL, dup)
        others = [WeChatUser(a, wechat_api, OFFICIAL) for _ in range(8)]
        pushes = [(client, same) for client in (a, b, a, b)] + [
            (client, signed_push(OFFICIAL, u.fields("image", PicUrl="http://mmbiz.qpic.cn/o", MediaId="m")))
            for client, u in zip([a, b] * 4, others, strict=True)
        ]
        answers = await asyncio.gather(*(c.post("/wechat/oa", params=q, data=body) for c, (q, body) in pushes))
        assert [r.status for r in answers] == [200] * len(pushes)
        await settle(a)
        await settle(b)
        inbound = [m for m in await rows(a) if m.direction == "in"]
        assert [m.provider_message_id for m in inbound].count(str(dup["MsgId"])) == 1
        assert len(inbound) == 9
        assert len(wechat_api.to(user.openid)) == 1


async def test_compatible_mode_push_over_http(gw: TestClient, wechat_api: WeChatAPIServer) -> None:
    user = WeChatUser(gw, wechat_api, COMPAT)
    await user.push(user.fields("voice", MediaId="m-c", Format="amr"))
    assert await user.replies() == MEDIA_TEXT.format(label="语音")


async def test_malformed_token_40014_forces_a_new_token(gw: TestClient, wechat_api: WeChatAPIServer) -> None:
    """WeChat rejects a token that stable_token still hands out: the sender asks once more with
    force_refresh (20 a day are allowed), and the reply goes out."""
    user = WeChatUser(gw, wechat_api, MINI)
    wechat_api.scripted = [40014]
    await user.push(user.fields("image", PicUrl="http://mmbiz.qpic.cn/f", MediaId="m-f"))
    assert await user.replies() == IMAGE_REPLY
    assert [r["force_refresh"] for r in wechat_api.token_requests] == [False, False, True]


@pytest.mark.parametrize(
    "body",
    [
        b"<xml><FromUserName><a>1</a></FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType></xml>",
        b"<xml><FromUserName>oU</FromUserName><CreateTime>1</CreateTime><MsgType><x/></MsgType></xml>",
        b"<xml><FromUserName>oU</FromUserName><CreateTime>1.5</CreateTime><MsgType>text</MsgType></xml>",
        b"<xml><FromUserName>oU</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType>"
        b"<Content><b>x</b></Content><MsgId>-7</MsgId></xml>",
        b"<xml><FromUserName>oU</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType>"
        b"<Event><e/></Event></xml>",
        b"<xml><FromUserName>oU</FromUserName><CreateTime>99999999999999999999999</CreateTime>"
        b"<MsgType>image</MsgType><MsgId>99999999999999999999999999</MsgId></xml>",
        b"<xml><FromUserName>oU</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType>"
        b"<Content>" + "路".encode() * 20_000 + b"</Content><MsgId>5</MsgId></xml>",
        b"<xml/>",
        b"",
    ],
)
async def test_odd_payloads_never_get_a_500(gw: TestClient, body: bytes) -> None:
    query, _ = signed_push(OFFICIAL, {})
    resp = await gw.post("/wechat/oa", params=query, data=body)
    assert resp.status in (200, 400, 413), await resp.text()
    await settle(gw)


async def test_pictures_and_voice_are_fetched_and_served_to_handling_units(
    gw: TestClient, wechat_api: WeChatAPIServer
) -> None:
    photo, voice = b"\xff\xd8\xff\xe0 a jpeg of the broken lamp", b"#!AMR\n a voice note"
    wechat_api.media = {"media-photo": (photo, "image/jpeg"), "media-voice": (voice, "audio/amr")}
    user = WeChatUser(gw, wechat_api, MINI)
    await user.push(user.fields("image", PicUrl="http://mmbiz.qpic.cn/lamp", MediaId="media-photo"))
    await user.push(user.fields("voice", MediaId="media-voice", Format="amr"))
    await user.push(user.fields("image", PicUrl="http://mmbiz.qpic.cn/gone", MediaId="media-expired"))
    assert len((await user.replies()).split("\n")) == 3  # every one is answered, fetched or not
    auth = {"Authorization": "Bearer test-token"}
    resp = await gw.get("/api/media/wechat:mini/media-photo", headers=auth)
    assert (resp.status, resp.content_type, await resp.read()) == (200, "image/jpeg", photo)
    resp = await gw.get("/api/media/wechat:mini/media-voice", headers=auth)
    assert (resp.status, await resp.read()) == (200, voice)
    assert (await gw.get("/api/media/wechat:mini/media-photo")).status == 401
    assert (await gw.get("/api/media/wechat:mini/media-expired", headers=auth)).status == 404
    fetches = {i.body["media_id"]: i for i in await rows(gw, OutboxItem) if i.channel == "wxmedia:mini"}
    assert {k: v.status for k, v in fetches.items()} == {
        "media-photo": "sent", "media-voice": "sent", "media-expired": "failed"}
    assert "40007" in fetches["media-expired"].last_error


async def test_replies_keep_their_order_through_an_outage(gw: TestClient, wechat_api: WeChatAPIServer) -> None:
    """The first reply meets 系统繁忙 and waits for its retry; the second must not overtake it."""
    user = WeChatUser(gw, wechat_api, MINI)
    wechat_api.scripted = [-1]
    await user.push(user.fields("image", PicUrl="http://mmbiz.qpic.cn/a", MediaId="m-a"))
    await user.push(user.fields("voice", MediaId="m-b", Format="amr"))
    for _ in range(150):  # the first reply's retry comes after the worker's 2 s backoff
        if len(wechat_api.to(user.openid)) == 2:
            break
        await asyncio.sleep(0.1)
    assert wechat_api.to(user.openid) == [IMAGE_REPLY, MEDIA_TEXT.format(label="语音")]
