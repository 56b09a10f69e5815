"""Local stand-ins for Alibaba Cloud and Tencent Cloud SMS, speaking their documented protocols
(their SendSms API and callback references): SendSms with the signature checked independently of the SDKs
(ACS3-HMAC-SHA256, TC3-HMAC-SHA256), the approved templates and their parameters checked as the
providers check them (docs/sms_templates.md), an outage switch, and helpers that push the providers'
callbacks (SmsUp / SmsReport, reply / status) to a gateway exactly as the providers would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

KEY_ID, KEY_SECRET = "LTAI-test-key", "test-secret-of-the-key"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LINK = re.compile(r"https?://|www\.", re.IGNORECASE)
CODE_WORDS = ("验证码", "注册码", "校验码", "动态码")
# The wording approved at the stand-ins, written here rather than imported: the gateway's own defaults
# are what is under test. Ids as tests/sms_gateway.py configures them.
APPROVED = {
    "reply": "热线回复：${text}",
    "notice": "您的工单尾号${no}答复：${text}",
    "survey": "您的工单尾号${no}已办理：${text}。回复1满意2基本满意3不满意，${hours}小时未回复视为${default}",
    "survey5": "您的工单尾号${no}已办理：${text}。回复1非常满意2满意3基本满意4不满意5非常不满意，"
               "${hours}小时未回复视为${default}",
    "ack": "您的${category}诉求已受理，工单号${no}，承办单位将于${deadline}前答复，${note}。",
    "code": "您的验证码为${code}，${minutes}分钟内有效，请勿告诉他人。",
}
ALIBABA_IDS = {"reply": "SMS_100001", "survey": "SMS_100002", "notice": "SMS_100003", "ack": "SMS_100004",
               "code": "SMS_100005", "survey5": "SMS_100006"}
TENCENT_IDS = {kind: code.removeprefix("SMS_") for kind, code in ALIBABA_IDS.items()}
CALLBACK_TOKEN = "sms-callback-token"  # the gateway refuses SMS callbacks without one


@dataclass
class Sent:
    phone: str
    sign: str
    template: str
    text: str
    provider_id: str
    out_id: str = ""
    values: dict[str, str] = field(default_factory=dict)


@dataclass
class ProviderServer:
    """Common part: the recorded SMS, the outage switch, per-number failures."""

    secret: str = KEY_SECRET
    sent: list[Sent] = field(default_factory=list)
    templates: dict[str, str] = field(default_factory=dict)  # approved template id → wording with ${name}
    refused: list[str] = field(default_factory=list)  # error codes of sends refused for their parameters
    variable_max: int | None = None  # characters per variable (Tencent: as the account's console says)
    down: bool = False
    rejected: int = 0  # requests refused for a bad signature
    fail_numbers: dict[str, str] = field(default_factory=dict)  # phone → provider error code
    calls: int = 0
    down_on_calls: set[int] = field(default_factory=set)  # a short outage at these request numbers
    server: TestServer | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    codes: ClassVar[dict[str, str]] = {}
    code_digits: ClassVar[tuple[int, int]] = (4, 6)

    def __post_init__(self) -> None:
        self.setup()

    def setup(self) -> None:
        """What the provider has approved and allows, before any test changes it."""

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    def is_down(self) -> bool:
        self.calls += 1
        return self.down or self.calls in self.down_on_calls

    def texts(self, phone: str | None = None) -> list[str]:
        """What the citizen reads per queued SMS (the gateway's out_id is "<outbox id>-<part>"): a text
        spread over several template messages is read whole, with its template's words once."""
        groups: dict[str, list[Sent]] = {}
        for sent in self.sent:
            if phone is None or sent.phone.endswith(phone):
                groups.setdefault(sent.out_id.rsplit("-", 1)[0] or sent.provider_id, []).append(sent)
        out = []
        for parts in groups.values():
            first = parts[0]
            same = all(p.template == first.template and "text" in p.values for p in parts)
            if same and len(parts) > 1:
                whole = "".join(p.values["text"] for p in parts)
                out.append(first.text.replace(first.values["text"], whole, 1))
            else:
                out.append("".join(p.text for p in parts))
        return out

    def last(self, phone: str | None = None) -> str:
        return self.texts(phone)[-1]

    def approve(self, ids: dict[str, str]) -> ProviderServer:
        """Templates approved at this provider: kind → its id, with the stand-in's approved wording."""
        self.templates.update({template_id: APPROVED[kind] for kind, template_id in ids.items()})
        return self

    def check(self, template_id: str, values: dict[str, str]) -> tuple[str, str]:
        """('', text the citizen reads) or (the provider's error code, '') for one template and its values."""
        content = self.templates.get(template_id)
        if content is None:
            return self.codes["template"], ""
        names = _VAR.findall(content)
        if any(not values.get(name) for name in names):
            return self.codes["missing"], ""
        code = any(word in content for word in CODE_WORDS)
        for name in names:
            value = values[name]
            if _LINK.search(value):
                return self.codes["link"], ""
            if code and name == "code" and not (value.isdigit() and self.code_digits[0] <= len(value) <= 6):
                return self.codes["format"], ""
            if self.variable_max is not None and len(value) > self.variable_max:
                return self.codes["length"], ""
        return "", _VAR.sub(lambda m: values[m.group(1)], content)

    async def start(self) -> ProviderServer:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def handle(self, request: web.Request) -> web.Response:  # pragma: no cover - overridden
        raise NotImplementedError


def _pct(value: str) -> str:
    return quote(value, safe="-_.~")


class AlibabaServer(ProviderServer):
    """dysmsapi 2017-05-25 SendSms over RPC with the V3 signature (POST /, params in the query).
    Parameters as Alibaba checks them: a JSON object of strings, each variable of the template present,
    1-35 characters (申请短信模板, help.aliyun.com/document_detail/108088.htm), a code 4-6 digits
    (验证码模板规范, 463237), no link."""

    codes: ClassVar[dict[str, str]] = {"template": "isv.SMS_TEMPLATE_ILLEGAL", "missing": "isv.TEMPLATE_MISSING_PARAMETERS",
             "link": "isv.PARAM_NOT_SUPPORT_URL", "format": "isv.TEMPLATE_PARAMS_ILLEGAL",
             "length": "isv.PARAM_LENGTH_LIMIT"}
    code_digits: ClassVar[tuple[int, int]] = (4, 6)

    def setup(self) -> None:
        self.variable_max = 35
        self.approve(ALIBABA_IDS)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.is_down():
            return web.json_response({"Code": "ServiceUnavailable", "Message": "service unavailable"}, status=503)
        auth = request.headers.get("Authorization", "")
        match = re.match(r"ACS3-HMAC-SHA256 Credential=([^,]+),SignedHeaders=([^,]+),Signature=([0-9a-f]+)$", auth)
        if not match or match.group(1) != KEY_ID:
            self.rejected += 1
            return web.json_response({"Code": "InvalidAccessKeyId.NotFound", "Message": "bad key"}, status=404)
        signed = match.group(2).split(";")
        for required in ("host", "x-acs-action", "x-acs-content-sha256", "x-acs-date", "x-acs-signature-nonce"):
            if required not in signed:
                self.rejected += 1
                return web.json_response({"Code": "IncompleteSignature", "Message": required}, status=400)
        if hashlib.sha256(body).hexdigest() != request.headers.get("x-acs-content-sha256"):
            self.rejected += 1
            return web.json_response({"Code": "InvalidContentSha256"}, status=400)
        query = "&".join(f"{_pct(k)}={_pct(v)}" for k, v in sorted(request.query.items()))
        headers = "".join(f"{h}:{request.headers.get(h, '').strip()}\n" for h in signed)
        canonical = "\n".join(["POST", "/", query, headers, ";".join(signed), hashlib.sha256(body).hexdigest()])
        to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
        expected = hmac.new(self.secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, match.group(3)):
            self.rejected += 1
            return web.json_response({"Code": "SignatureDoesNotMatch", "Message": "signature"}, status=400)
        if (request.headers.get("x-acs-action"), request.headers.get("x-acs-version")) != ("SendSms", "2017-05-25"):
            return web.json_response({"Code": "InvalidAction.NotFound"}, status=404)
        q = request.query
        try:
            params = json.loads(q["TemplateParam"])
            assert isinstance(params, dict) and all(isinstance(v, str) for v in params.values())
        except (KeyError, ValueError, AssertionError):
            return web.json_response({"Code": "isv.INVALID_JSON_PARAM", "Message": "JSON参数不合法，只接受字符串值"})
        phone = q.get("PhoneNumbers", "")
        if phone in self.fail_numbers:
            return web.json_response({"Code": self.fail_numbers[phone], "Message": "rejected", "RequestId": "r"})
        error, text = self.check(q.get("TemplateCode", ""), params)
        if error:
            self.refused.append(error)
            return web.json_response({"Code": error, "Message": "template parameters", "RequestId": "r"})
        biz_id = f"{next(self._ids):06d}^0"
        self.sent.append(Sent(phone, q.get("SignName", ""), q.get("TemplateCode", ""), text, biz_id,
                              q.get("OutId", ""), {k: str(v) for k, v in params.items()}))
        return web.json_response({"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": uuid.uuid4().hex})


def _tc_json(data: dict[str, Any]) -> web.Response:
    """Tencent answers with exactly `application/json` (the SDK reads errors only then)."""
    return web.Response(body=json.dumps(data).encode(), headers={"Content-Type": "application/json"})


class TencentServer(ProviderServer):
    """SMS API 3.0 (2021-01-11) SendSms with TC3-HMAC-SHA256. Parameters as Tencent checks them
    (正文模板审核标准, cloud.tencent.com/document/product/382/39023): one string per variable {1}, {2}…
    in order, a code of at most 6 digits, no link, and the account's per-variable limit if it has one."""

    codes: ClassVar[dict[str, str]] = {"template": "FailedOperation.TemplateIncorrectOrUnapproved",
             "missing": "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
             "link": "FailedOperation.ContainSensitiveWord",
             "format": "InvalidParameterValue.TemplateParameterFormatError",
             "length": "InvalidParameterValue.TemplateParameterLengthLimit"}
    code_digits: ClassVar[tuple[int, int]] = (1, 6)

    def setup(self) -> None:
        self.approve(TENCENT_IDS)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        request_id = uuid.uuid4().hex
        if self.is_down():
            return web.Response(status=502, text="bad gateway")
        auth = request.headers.get("Authorization", "")
        match = re.match(
            r"TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/sms/tc3_request, "
            r"SignedHeaders=content-type;host, Signature=([0-9a-f]+)$", auth)
        timestamp = request.headers.get("X-TC-Timestamp", "")
        ok = bool(match) and match.group(1) == KEY_ID and timestamp.isdigit()
        if ok:
            date = match.group(2)
            ok = date == dt.datetime.fromtimestamp(int(timestamp), dt.UTC).strftime("%Y-%m-%d")
            ok = ok and abs(time.time() - int(timestamp)) < 300
            canonical = (f"POST\n/\n\ncontent-type:{request.headers.get('Content-Type', '')}\n"
                         f"host:{request.headers.get('Host', '')}\n\ncontent-type;host\n"
                         + hashlib.sha256(body).hexdigest())
            to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{date}/sms/tc3_request\n" + hashlib.sha256(
                canonical.encode()).hexdigest()
            k = hmac.new(("TC3" + self.secret).encode(), date.encode(), hashlib.sha256).digest()
            k = hmac.new(k, b"sms", hashlib.sha256).digest()
            k = hmac.new(k, b"tc3_request", hashlib.sha256).digest()
            expected = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
            ok = ok and hmac.compare_digest(expected, match.group(3))
        if not ok:
            self.rejected += 1
            return _tc_json({"Response": {"Error": {"Code": "AuthFailure.SignatureFailure",
                                                             "Message": "signature"}, "RequestId": request_id}})
        if request.headers.get("X-TC-Action") != "SendSms" or request.headers.get("X-TC-Version") != "2021-01-11":
            return _tc_json({"Response": {"Error": {"Code": "InvalidAction", "Message": "action"},
                                                   "RequestId": request_id}})
        data = json.loads(body)
        statuses = []
        for number in data["PhoneNumberSet"]:
            phone = number.removeprefix("+86")
            if phone in self.fail_numbers:
                statuses.append({"SerialNo": "", "PhoneNumber": number, "Fee": 0, "SessionContext": "",
                                 "Code": self.fail_numbers[phone], "Message": "rejected", "IsoCode": "CN"})
                continue
            template_id = data.get("TemplateId", "")
            names = _VAR.findall(self.templates.get(template_id, ""))
            params = data.get("TemplateParamSet") or []
            if len(params) != len(names) or not all(isinstance(p, str) for p in params):
                error, text = self.codes["missing"], ""
            else:
                error, text = self.check(template_id, dict(zip(names, params, strict=True)))
            if error:
                self.refused.append(error)
                statuses.append({"SerialNo": "", "PhoneNumber": number, "Fee": 0, "SessionContext": "",
                                 "Code": error, "Message": "template parameters", "IsoCode": "CN"})
                continue
            serial = f"2433:{next(self._ids):08d}"
            self.sent.append(Sent(phone, data.get("SignName", ""), template_id, text, serial,
                                  data.get("SessionContext", ""), dict(zip(names, params, strict=True))))
            statuses.append({"SerialNo": serial, "PhoneNumber": number, "Fee": 1,
                             "SessionContext": data.get("SessionContext", ""), "Code": "Ok",
                             "Message": "send success", "IsoCode": "CN"})
        return _tc_json({"Response": {"SendStatusSet": statuses, "RequestId": request_id}})


# --- what the providers push to the gateway ------------------------------------------------------


async def alibaba_up(gateway: TestClient, phone: str, content: str, seq: int | str, token: str = CALLBACK_TOKEN) -> Any:
    body = [{"phone_number": phone, "content": content, "send_time": "2026-12-01 10:00:00", "dest_code": "1234",
             "sequence_id": seq}]
    resp = await gateway.post(f"/sms/alibaba/up?token={token}", json=body)
    return resp.status, await resp.json()


async def alibaba_report(gateway: TestClient, sent: Sent, success: bool = True, token: str = CALLBACK_TOKEN) -> Any:
    body = [{"phone_number": sent.phone, "send_time": "2026-12-01 10:00:00", "report_time": "2026-12-01 10:00:05",
             "success": success, "err_code": "DELIVERED" if success else "MK:0001",
             "err_msg": "用户接收成功" if success else "空号", "sms_size": "1", "biz_id": sent.provider_id,
             "out_id": sent.out_id}]
    resp = await gateway.post(f"/sms/alibaba/report?token={token}", json=body)
    return resp.status, await resp.json()


async def tencent_reply(gateway: TestClient, phone: str, text: str, at: int, token: str = CALLBACK_TOKEN) -> Any:
    body = {"extend": "", "mobile": phone, "nationcode": "86", "sign": "12345热线", "text": text, "time": at}
    resp = await gateway.post(f"/sms/tencent/reply?token={token}", json=body)
    return resp.status, await resp.json()


async def tencent_status(gateway: TestClient, sent: Sent, success: bool = True, token: str = CALLBACK_TOKEN) -> Any:
    body = [{"user_receive_time": "2026-12-01 10:00:05", "nationcode": "86", "mobile": sent.phone,
             "report_status": "SUCCESS" if success else "FAIL", "errmsg": "DELIVRD" if success else "MN:0001",
             "description": "用户短信送达成功" if success else "空号", "sid": sent.provider_id}]
    resp = await gateway.post(f"/sms/tencent/status?token={token}", json=body)
    return resp.status, await resp.json()
