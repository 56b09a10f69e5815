"""The SMS providers against local servers that check the signatures the way the clouds do."""

from __future__ import annotations

import json

import pytest

from channels.sms import templates
from channels.sms.alibaba import AlibabaSms
from channels.sms.base import normalise_phone
from channels.sms.channel import make_templates
from channels.sms.templates import Message
from channels.sms.tencent import TencentSms
from common import sms
from common.text import mask_phone
from gateway.config import Settings
from tests.sms_provider_servers import ALIBABA_IDS, KEY_ID, KEY_SECRET, TENCENT_IDS, AlibabaServer, TencentServer

SIGN = "济源12345"


def alibaba(url: str, secret: str = KEY_SECRET) -> AlibabaSms:
    return AlibabaSms(key_id=KEY_ID, key_secret=secret, sign_name=SIGN, api_url=url, timeout_s=2)


def tencent(url: str, secret: str = KEY_SECRET) -> TencentSms:
    return TencentSms(secret_id=KEY_ID, secret_key=secret, app_id="1400006666", sign_name=SIGN, api_url=url,
                      timeout_s=2)


def messages(provider: str, body: dict[str, object], variable_max: int = 0) -> list[Message]:
    ids = TENCENT_IDS if provider == "tencent" else ALIBABA_IDS
    loaded = templates.load(provider, ids, {}, SIGN, variable_max)
    variables = body.get("vars")
    return loaded.messages(str(body["kind"]), variables if isinstance(variables, dict) else None,
                           str(body.get("text", "")))


def one(provider: str, body: dict[str, object]) -> Message:
    [message] = messages(provider, body)
    return message


def reply(text: str, provider: str = "alibaba") -> Message:
    return one(provider, sms.body(sms.REPLY, text, text=text))


SURVEY = sms.body(sms.SURVEY, no="0001", text="路灯已修复", hours="24", default="基本满意")


async def test_alibaba_send_is_signed_and_carries_the_template_variables() -> None:
    server = await AlibabaServer().start()
    try:
        result = await alibaba(server.url).send("13800001234", one("alibaba", SURVEY), out_id="7-1")
        assert result.outcome == "sent" and result.provider_id == server.sent[0].provider_id
        sent = server.sent[0]
        assert (sent.phone, sent.sign, sent.template, sent.out_id) == ("13800001234", SIGN, "SMS_100002", "7-1")
        assert sent.text == "您的工单尾号0001已办理：路灯已修复。回复1满意2基本满意3不满意，24小时未回复视为基本满意"
        assert server.rejected == 0 and server.refused == []
        quoted = reply("您好，工单已受理 “引号” & 100%")
        assert (await alibaba(server.url).send("13800001234", quoted, out_id="7-2")).outcome == "sent"
        assert server.sent[-1].text == "热线回复：您好，工单已受理 “引号” & 100%"
        # A wrong secret is refused by the server's own signature check: failed, not retried forever.
        bad = await alibaba(server.url, secret="wrong").send("13800001234", reply("x"), out_id="8-1")
        assert bad.outcome == "failed" and "SignatureDoesNotMatch" in bad.error and server.rejected == 1
        server.fail_numbers["13800009999"] = "isv.MOBILE_NUMBER_ILLEGAL"
        assert (await alibaba(server.url).send("13800009999", reply("x"), out_id="9-1")).outcome == "failed"
        server.fail_numbers["13800009999"] = "isv.BUSINESS_LIMIT_CONTROL"
        assert (await alibaba(server.url).send("13800009999", reply("x"), out_id="9-1")).outcome == "retry"
        server.down = True
        assert (await alibaba(server.url).send("13800001234", reply("x"), out_id="9-2")).outcome == "retry"
    finally:
        await server.close()


async def test_the_stand_ins_check_the_parameters_as_the_providers_do() -> None:
    """A value over Alibaba's 35 characters, a missing variable, a link, a 7-digit code: refused, and
    never retried (the same SMS would be refused again)."""
    ali, ten = await AlibabaServer().start(), await TencentServer().start()
    try:
        template = templates.Template(sms.REPLY, "SMS_100001", "热线回复：${text}")
        too_long = Message(template, {"text": "一" * 36}, "")
        assert (await alibaba(ali.url).send("13800001234", too_long, out_id="1-1")).outcome == "failed"
        missing = Message(templates.Template(sms.NOTICE, "SMS_100003", "x${no}y${text}"), {"text": "z"}, "")
        assert (await alibaba(ali.url).send("13800001234", missing, out_id="1-2")).outcome == "failed"
        link = Message(template, {"text": "详见https://example.com"}, "")
        assert (await alibaba(ali.url).send("13800001234", link, out_id="1-3")).outcome == "failed"
        assert ali.refused == ["isv.PARAM_LENGTH_LIMIT", "isv.TEMPLATE_MISSING_PARAMETERS",
                               "isv.PARAM_NOT_SUPPORT_URL"] and ali.sent == []
        code = templates.Template(sms.CODE, "100005", templates.DEFAULT_CONTENT[sms.CODE])
        seven = Message(code, {"code": "1234567", "minutes": "5"}, "")
        assert (await tencent(ten.url).send("13800001234", seven, out_id="2-1")).outcome == "failed"
        assert ten.refused == ["InvalidParameterValue.TemplateParameterFormatError"]
        ok = one("tencent", sms.code_body("123456", 5))
        assert (await tencent(ten.url).send("13800001234", ok, out_id="2-2")).outcome == "sent"
        assert ten.sent[-1].text == "您的验证码为123456，5分钟内有效，请勿告诉他人。"
    finally:
        await ali.close()
        await ten.close()


async def test_alibaba_unreachable_is_retried() -> None:
    from gateway.botproc import free_port

    result = await alibaba(f"http://127.0.0.1:{free_port()}").send("13800001234", reply("x"), out_id="1-1")
    assert result.outcome == "retry"


async def test_tencent_send_is_signed_and_returns_the_serial_no() -> None:
    server = await TencentServer().start()
    try:
        result = await tencent(server.url).send("13800001234", one("tencent", SURVEY), out_id="3-1")
        assert result.outcome == "sent" and result.provider_id == server.sent[0].provider_id
        sent = server.sent[0]  # TemplateParamSet in the order of {1}, {2}…: the text reads right
        assert (sent.phone, sent.sign, sent.template) == ("13800001234", SIGN, "100002")
        assert sent.text.startswith("您的工单尾号0001已办理：路灯已修复。") and sent.text.endswith("24小时未回复视为基本满意")
        bad = await tencent(server.url, secret="wrong").send("13800001234", reply("x", "tencent"), out_id="4-1")
        assert bad.outcome == "failed" and "AuthFailure" in bad.error and server.rejected == 1
        server.fail_numbers["13800009999"] = "InvalidParameterValue.IncorrectPhoneNumber"
        assert (await tencent(server.url).send("13800009999", reply("x", "tencent"), out_id="5-1")).outcome == "failed"
        server.fail_numbers["13800009999"] = "LimitExceeded.PhoneNumberDailyLimit"
        assert (await tencent(server.url).send("13800009999", reply("x", "tencent"), out_id="5-1")).outcome == "retry"
        server.down = True
        assert (await tencent(server.url).send("13800001234", reply("x", "tencent"), out_id="6-1")).outcome == "retry"
    finally:
        await server.close()


def test_phone_numbers_and_masking() -> None:
    for raw in ("13800001234", "+8613800001234", "8613800001234", "008613800001234", "138 0000 1234"):
        assert normalise_phone(raw) == "13800001234"
    assert normalise_phone("12345") is None and normalise_phone("02388881234") is None
    assert mask_phone("13800001234") == "138****1234"


def test_the_segment_budget_counts_the_signature_and_the_template() -> None:
    """70 characters with 【signature】 and fixed text are one SMS; longer ones are billed per 67."""
    assert [templates.parts(n) for n in (70, 71, 134, 135, 160)] == [1, 2, 2, 3, 3]
    short = "感谢评价！工单尾号0001已记录：满意。"
    assert [m.text for m in messages("tencent", sms.body(sms.REPLY, short, text=short))] == ["热线回复：" + short]
    long = ("您的工单JY20261201000001已办理，答复：路灯已于昨日修复，电工已到现场检查线路。"
            "请回复1满意、2基本满意、3不满意，24小时内未回复视为基本满意。")
    parts = messages("tencent", sms.body(sms.REPLY, long, text=long))  # Tencent: one segment each
    assert len(parts) == 2 and "".join(m.values["text"] for m in parts) == long
    assert all(len(m.text) + len(SIGN) + 2 <= 70 for m in parts) and parts[0].values["text"].endswith("。")
    no_breaks = "一" * 150  # 70 - 【济源12345】 (9) - 热线回复： (5) = 56 per SMS
    assert [len(m.values["text"]) for m in messages("tencent", sms.body(sms.REPLY, text=no_breaks))] == [56, 56, 38]
    # Alibaba takes 35 characters per variable: more SMS, each within the rule.
    assert [len(m.values["text"]) for m in messages("alibaba", sms.body(sms.REPLY, text=no_breaks))] == [35] * 4 + [10]


def test_a_long_answer_goes_out_as_several_template_messages() -> None:
    """A handling unit's 300-character answer: whole, in numbered order, every SMS within the provider's
    variable limit and one segment; the survey that follows names it in a few words."""
    answer = ("经核查，您反映的天坛路御龙湾小区北门路灯损坏问题属实。我局已于11月28日安排电工到现场检修，"
              "更换了损坏的灯泡和老化的线路，并对周边其他路灯进行了排查，发现两处隐患一并处理。"
              "目前该路段照明已恢复正常。今后我们将加强日常巡查，发现问题及时处理。"
              "如仍有问题，可拨打城市管理局值班电话反映，也可再次通过12345热线反映，我们将继续跟进。") * 2
    for provider, limit in (("alibaba", 35), ("tencent", None)):
        sent = messages(provider, {**sms.body(sms.SURVEY, no="0001", text=answer, hours="24", default="基本满意")})
        notices, survey = sent[:-1], sent[-1]
        assert {m.template.kind for m in notices} == {sms.NOTICE} and survey.template.kind == sms.SURVEY
        assert "".join(m.values["text"] for m in notices) == answer
        assert all(len(SIGN) + 2 + len(m.text) <= 70 for m in sent)
        assert all(len(v) <= (limit or 500) for m in sent for v in m.values.values())
        assert survey.values["text"].endswith("…") and answer.startswith(survey.values["text"][:-1])
    loaded = templates.load("alibaba", ALIBABA_IDS, {}, SIGN)
    assert sum(loaded.cost(m) for m in messages("alibaba", sms.body(sms.NOTICE, no="0001", text=answer))) == len(
        messages("alibaba", sms.body(sms.NOTICE, no="0001", text=answer)))


def test_a_code_goes_only_in_a_verification_code_template() -> None:
    """B's one-time codes: the `code` template with `code` and `minutes`, never a plain reply."""
    body = sms.code_body("042917", 5)
    [message] = messages("alibaba", body)
    assert message.template.kind == sms.CODE and message.values == {"code": "042917", "minutes": "5"}
    without = templates.load("alibaba", {sms.REPLY: "SMS_1"}, {}, SIGN)
    assert without.messages(sms.CODE, body["vars"], body["text"]) == []
    with pytest.raises(ValueError, match="4 to 6 digits"):
        sms.code_body("12", 5)


def test_templates_are_checked_against_the_providers_rules_at_start() -> None:
    base = {"sms_provider": "alibaba", "sms_key_id": "a", "sms_key_secret": "b", "sms_template_reply": "SMS_1",
            "sms_template_ack": "SMS_2", "sms_template_code": "SMS_3"}

    def refused(match: str, **changes: object) -> None:
        with pytest.raises(ValueError, match=match):
            make_templates(Settings(**{**base, **changes}))  # type: ignore[arg-type]

    make_templates(Settings(**base))  # type: ignore[arg-type] # the default wording passes
    refused("side by side", sms_template_texts=json.dumps({"reply": "回复：${text}${text}"}))
    refused("only variables", sms_template_texts=json.dumps({"reply": "${text}"}))
    refused("【】", sms_template_texts=json.dumps({"reply": "【热线】${text}"}))
    refused("问卷", sms_template_texts=json.dumps({"reply": "问卷回复：${text}"}))
    refused("must use each of", sms_template_texts=json.dumps({"ack": "工单${no}已受理，${note}"}))
    refused("must say 验证码", sms_template_texts=json.dumps({"code": "您的密码${code}，${minutes}分钟有效"}))
    refused("allows at most 35", sms_variable_max_chars=40)
    refused("not JSON", sms_template_texts="{")
    # A Tencent account certified as a person takes 12 characters per variable: the work order
    # number of the acknowledgement does not fit, and the start says so.
    refused(r"\$\{no\} holds up to 20 characters, tencent allows 12", sms_provider="tencent",
            sms_variable_max_chars=12)


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
