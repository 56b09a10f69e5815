"""Alibaba Cloud SMS (dysmsapi 2017-05-25): SendSms through the official SDK's async client, and the
SmsUp / SmsReport push payloads (Alibaba Cloud SMS documentation: 消息回执 HTTP 批量推送).

The SDK (alibabacloud-dysmsapi20170525 on darabonba-core) runs on asyncio (`send_sms_with_options_async`,
aiohttp underneath) and signs with ACS3-HMAC-SHA256, so no signing is reimplemented here.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from alibabacloud_dysmsapi20170525 import models as ali_models
from alibabacloud_dysmsapi20170525.client import Client
from alibabacloud_tea_openapi import models as openapi_models
from darabonba.runtime import RuntimeOptions

from channels.sms.base import ProviderResult
from channels.sms.templates import Message

log = logging.getLogger(__name__)

NAME = "alibaba"
DEFAULT_ENDPOINT = "https://dysmsapi.aliyuncs.com"
# Codes worth another try later: throttling and the provider's own trouble. Everything else
# (bad number, signature, template, credentials) will not get better by retrying.
RETRY_CODES = ("isv.BUSINESS_LIMIT_CONTROL", "Throttling", "ServiceUnavailable", "InternalError", "isp.")
ACK = {"code": 0, "msg": "成功"}


class AlibabaSms:
    name = NAME

    def __init__(
        self,
        *,
        key_id: str,
        key_secret: str,
        sign_name: str,
        api_url: str = "",
        timeout_s: float = 5.0,
    ) -> None:
        url = urlsplit(api_url or DEFAULT_ENDPOINT)
        self.client = Client(
            openapi_models.Config(
                access_key_id=key_id,
                access_key_secret=key_secret,
                endpoint=url.netloc,
                protocol=url.scheme or "https",
            )
        )
        self.sign_name = sign_name
        ms = int(timeout_s * 1000)
        self.runtime = RuntimeOptions(autoretry=False, read_timeout=ms, connect_timeout=ms)

    async def send(self, phone: str, message: Message, *, out_id: str) -> ProviderResult:
        request = ali_models.SendSmsRequest(
            phone_numbers=phone,
            sign_name=self.sign_name,
            template_code=message.template.template_id,
            template_param=json.dumps(message.values, ensure_ascii=False),  # {"no": "0001", …}: strings only
            out_id=out_id,
        )
        try:
            response = await self.client.send_sms_with_options_async(request, self.runtime)
        except Exception as exc:  # the SDK raises TeaException (HTTP errors) or UnretryableException (network)
            code = str(getattr(exc, "code", "") or type(exc).__name__)
            status = getattr(exc, "statusCode", None)
            message = f"{code}: {getattr(exc, 'message', '') or exc}"[:500]
            if status is not None and 400 <= int(status) < 500 and not code.startswith(RETRY_CODES):
                return ProviderResult("failed", error=message)
            return ProviderResult("retry", error=message)
        body = response.body
        if body.code == "OK":
            return ProviderResult("sent", provider_id=body.biz_id)
        error = f"{body.code}: {body.message}"
        return ProviderResult("retry" if str(body.code).startswith(RETRY_CODES) else "failed", error=error)

    async def close(self) -> None:
        return None


def parse_up(item: dict[str, Any]) -> dict[str, Any]:
    """SmsUp item → {phone, text, key}; sequence_id may be a number or a string (older docs)."""
    phone, content = item.get("phone_number"), item.get("content")
    if not isinstance(phone, str) or not isinstance(content, str):
        raise ValueError("SmsUp item needs string phone_number and content")
    seq = item.get("sequence_id")
    if not isinstance(seq, (str, int)) or isinstance(seq, bool) or str(seq) == "":
        raise ValueError("SmsUp item needs sequence_id")
    return {"phone": phone, "text": content, "key": f"up:{seq}", "at": item.get("send_time")}


def parse_report(item: dict[str, Any]) -> dict[str, Any]:
    """SmsReport item → {provider_id, phone, ok, error, key}. Reports repeat: the key dedupes them."""
    biz_id, success = item.get("biz_id"), item.get("success")
    if not isinstance(biz_id, str) or not biz_id or not isinstance(success, bool):
        raise ValueError("SmsReport item needs biz_id (string) and success (boolean)")
    phone = str(item.get("phone_number", ""))
    error = "" if success else f"{item.get('err_code', '')} {item.get('err_msg', '')}".strip()
    return {
        "provider_id": biz_id,
        "phone": phone,
        "ok": success,
        "error": error,
        "key": f"report:{biz_id}:{phone}:{item.get('err_code', '')}",
    }
