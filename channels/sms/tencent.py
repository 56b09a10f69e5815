"""Tencent Cloud SMS (API 3.0, 2021-01-11): SendSms through the official SDK's async client, and the
reply and status callbacks (Tencent Cloud SMS documentation: 回执数据 / 回复数据 callbacks).

tencentcloud-sdk-python-common ships an asyncio client (`sms_client_async`, httpx underneath, the
`async` extra) that signs with TC3-HMAC-SHA256, so no signing is reimplemented here.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any
from urllib.parse import urlsplit

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sms.v20210111 import models as tc_models
from tencentcloud.sms.v20210111.sms_client_async import SmsClient

from channels.sms.base import ProviderResult
from channels.sms.templates import Message

log = logging.getLogger(__name__)

NAME = "tencent"
DEFAULT_ENDPOINT = "https://sms.tencentcloudapi.com"
RETRY_CODES = ("LimitExceeded", "InternalError", "RequestLimitExceeded", "FailedOperation.InsufficientBalance",
               "ClientNetworkError", "ServerNetworkError")
ACK = {"result": 0, "errmsg": "OK"}


class TencentSms:
    name = NAME

    def __init__(
        self,
        *,
        secret_id: str,
        secret_key: str,
        app_id: str,
        sign_name: str,
        region: str = "ap-guangzhou",
        api_url: str = "",
        timeout_s: float = 5.0,
    ) -> None:
        url = urlsplit(api_url or DEFAULT_ENDPOINT)
        http = HttpProfile(endpoint=url.netloc, reqTimeout=max(1, int(timeout_s)))
        http.scheme = url.scheme or "https"
        self.client = SmsClient(credential.Credential(secret_id, secret_key), region, ClientProfile(httpProfile=http))
        self.app_id = app_id
        self.sign_name = sign_name

    async def send(self, phone: str, message: Message, *, out_id: str) -> ProviderResult:
        request = tc_models.SendSmsRequest()
        request.PhoneNumberSet = [f"+86{phone}"]
        request.SmsSdkAppId = self.app_id
        request.SignName = self.sign_name
        request.TemplateId = message.template.template_id
        request.TemplateParamSet = [message.values[name] for name in message.template.names]  # {1}, {2}… in order
        request.SessionContext = out_id
        try:
            response = await self.client.SendSms(request)
        except TencentCloudSDKException as exc:
            code = str(exc.get_code() or "")
            outcome = "retry" if code.startswith(RETRY_CODES) or not code else "failed"
            return ProviderResult(outcome, error=f"{code}: {exc.get_message()}"[:500])
        except Exception as exc:  # network errors from httpx
            return ProviderResult("retry", error=f"{type(exc).__name__}: {exc}"[:500])
        statuses = response.SendStatusSet or []
        if not statuses:
            return ProviderResult("retry", error="empty SendStatusSet")
        status = statuses[0]
        if status.Code == "Ok":
            return ProviderResult("sent", provider_id=status.SerialNo)
        outcome = "retry" if str(status.Code).startswith(RETRY_CODES) else "failed"
        return ProviderResult(outcome, error=f"{status.Code}: {status.Message}")

    async def close(self) -> None:
        return None


def parse_reply(item: dict[str, Any]) -> dict[str, Any]:
    """Reply callback (one object) → {phone, text, key}. It carries no id: the key hashes what it has."""
    mobile, text, at = item.get("mobile"), item.get("text"), item.get("time")
    if not isinstance(mobile, str) or not isinstance(text, str) or not isinstance(at, int):
        raise ValueError("reply callback needs string mobile and text and integer time")
    nation = str(item.get("nationcode", "86"))
    digest = hashlib.sha256(f"{nation}:{mobile}:{at}:{text}".encode()).hexdigest()[:32]
    return {"phone": f"+{nation}{mobile}" if nation != "86" else mobile, "text": text, "key": f"up:{digest}"}


def parse_status(item: dict[str, Any]) -> dict[str, Any]:
    """Status callback item → {provider_id, phone, ok, error, key}."""
    sid, status = item.get("sid"), item.get("report_status")
    if not isinstance(sid, str) or not sid or status not in ("SUCCESS", "FAIL"):
        raise ValueError("status item needs sid and report_status SUCCESS or FAIL")
    phone = str(item.get("mobile", ""))
    ok = status == "SUCCESS"
    error = "" if ok else f"{item.get('errmsg', '')} {item.get('description', '')}".strip()
    return {"provider_id": sid, "phone": phone, "ok": ok, "error": error, "key": f"report:{sid}:{phone}:{status}"}
