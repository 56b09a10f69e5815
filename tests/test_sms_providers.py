"""The SMS providers against local servers that check the signatures the way the clouds do."""

from __future__ import annotations

from channels.sms.alibaba import AlibabaSms
from channels.sms.base import normalise_phone, segments
from channels.sms.tencent import TencentSms
from common.text import mask_phone
from tests.sms_provider_servers import KEY_ID, KEY_SECRET, AlibabaServer, TencentServer

TEMPLATES = {"reply": "SMS_100001", "survey": "SMS_100002"}


def alibaba(url: str, secret: str = KEY_SECRET) -> AlibabaSms:
    return AlibabaSms(key_id=KEY_ID, key_secret=secret, sign_name="济源12345", templates=TEMPLATES, api_url=url,
                      timeout_s=2)


def tencent(url: str, secret: str = KEY_SECRET) -> TencentSms:
    return TencentSms(secret_id=KEY_ID, secret_key=secret, app_id="1400006666", sign_name="济源12345",
                      templates={"reply": "100001", "survey": "100002"}, api_url=url, timeout_s=2)


async def test_alibaba_send_is_signed_and_returns_the_biz_id() -> None:
    server = await AlibabaServer().start()
    try:
        result = await alibaba(server.url).send("13800001234", "您好，工单已受理 “引号” & 100%", kind="survey", out_id="7-1")
        assert result.outcome == "sent" and result.provider_id == server.sent[0].provider_id
        sent = server.sent[0]
        assert (sent.phone, sent.sign, sent.template, sent.out_id) == ("13800001234", "济源12345", "SMS_100002", "7-1")
        assert sent.text == "您好，工单已受理 “引号” & 100%" and server.rejected == 0
        # A wrong secret is refused by the server's own signature check: failed, not retried forever.
        bad = await alibaba(server.url, secret="wrong").send("13800001234", "x", kind="reply", out_id="8-1")
        assert bad.outcome == "failed" and "SignatureDoesNotMatch" in bad.error and server.rejected == 1
        server.fail_numbers["13800009999"] = "isv.MOBILE_NUMBER_ILLEGAL"
        assert (await alibaba(server.url).send("13800009999", "x", kind="reply", out_id="9-1")).outcome == "failed"
        server.fail_numbers["13800009999"] = "isv.BUSINESS_LIMIT_CONTROL"
        assert (await alibaba(server.url).send("13800009999", "x", kind="reply", out_id="9-1")).outcome == "retry"
        server.down = True
        assert (await alibaba(server.url).send("13800001234", "x", kind="reply", out_id="9-2")).outcome == "retry"
    finally:
        await server.close()


async def test_alibaba_unreachable_is_retried() -> None:
    from gateway.botproc import free_port

    result = await alibaba(f"http://127.0.0.1:{free_port()}").send("13800001234", "x", kind="reply", out_id="1-1")
    assert result.outcome == "retry"


async def test_tencent_send_is_signed_and_returns_the_serial_no() -> None:
    server = await TencentServer().start()
    try:
        result = await tencent(server.url).send("13800001234", "您的工单已办理", kind="reply", out_id="3-1")
        assert result.outcome == "sent" and result.provider_id == server.sent[0].provider_id
        sent = server.sent[0]
        assert (sent.phone, sent.sign, sent.template, sent.text) == ("13800001234", "济源12345", "100001", "您的工单已办理")
        bad = await tencent(server.url, secret="wrong").send("13800001234", "x", kind="reply", out_id="4-1")
        assert bad.outcome == "failed" and "AuthFailure" in bad.error and server.rejected == 1
        server.fail_numbers["13800009999"] = "InvalidParameterValue.IncorrectPhoneNumber"
        assert (await tencent(server.url).send("13800009999", "x", kind="reply", out_id="5-1")).outcome == "failed"
        server.fail_numbers["13800009999"] = "LimitExceeded.PhoneNumberDailyLimit"
        assert (await tencent(server.url).send("13800009999", "x", kind="reply", out_id="5-1")).outcome == "retry"
        server.down = True
        assert (await tencent(server.url).send("13800001234", "x", kind="reply", out_id="6-1")).outcome == "retry"
    finally:
        await server.close()


def test_phone_numbers_and_masking() -> None:
    for raw in ("13800001234", "+8613800001234", "8613800001234", "008613800001234", "138 0000 1234"):
        assert normalise_phone(raw) == "13800001234"
    assert normalise_phone("12345") is None and normalise_phone("02388881234") is None
    assert mask_phone("13800001234") == "138****1234"


def test_segments_fit_one_sms_or_split_at_sentence_ends() -> None:
    sign = "12345热线"  # 【12345热线】 is 9 characters: 61 are left for the text
    short = "感谢评价！工单尾号0001已记录：满意。"
    assert segments(short, sign) == [short]
    long = ("您的工单JY20261201000001已办理，答复：路灯已于昨日修复，电工已到现场检查线路。"
            "请回复1满意、2基本满意、3不满意，24小时内未回复视为基本满意。回复TD退订")
    parts = segments(long, sign)
    assert len(parts) == 2 and "".join(parts) == long
    assert all(len(p) + len(sign) + 2 <= 70 for p in parts)
    assert parts[0].endswith("。")
    no_breaks = "一" * 150
    assert [len(p) for p in segments(no_breaks, sign)] == [61, 61, 28]


def test_a_cloud_provider_without_credentials_stops_the_start() -> None:
    import pytest

    from channels.sms.channel import make_provider
    from gateway.config import Settings

    with pytest.raises(ValueError, match="HOTLINE_SMS_KEY_ID, HOTLINE_SMS_KEY_SECRET, HOTLINE_SMS_TEMPLATE_REPLY"):
        make_provider(Settings(sms_provider="alibaba"))
    with pytest.raises(ValueError, match="HOTLINE_SMS_APP_ID"):
        make_provider(Settings(sms_provider="tencent", sms_key_id="a", sms_key_secret="b", sms_template_reply="1"))
    with pytest.raises(ValueError, match="expected log, alibaba or tencent"):
        make_provider(Settings(sms_provider="carrier-pigeon"))
    assert make_provider(Settings()).name == "log"
