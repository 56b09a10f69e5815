"""Tell an external ticket system what the survey did to one of its orders (reopened for a redo,
expert review, revisit): a signed JSON POST through the outbox, so an outage delays it, never loses it.

Same signature as the inbound callback (gateway/events_api.py): X-Hotline-Timestamp and
X-Hotline-Signature: sha256=hex(HMAC-SHA256(secret, f"{timestamp}.{body}")).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import aiohttp

from storage.outbox import OutboxItem, SendResult

CHANNEL = "ticket_webhook"


def sign(secret: str, timestamp: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()


class TicketWebhookSender:
    def __init__(self, http: aiohttp.ClientSession, secret: str, timeout_s: float = 10.0) -> None:
        self.http = http
        self.secret = secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, item: OutboxItem) -> SendResult:
        raw = json.dumps(item.body, ensure_ascii=False).encode()
        stamp = str(int(time.time()))  # wall time, not the app's clock: the receiver checks it against its own
        headers = {"Content-Type": "application/json", "X-Hotline-Timestamp": stamp,
                   "X-Hotline-Signature": sign(self.secret, stamp, raw), "X-Hotline-Delivery": str(item.id)}
        try:
            async with self.http.post(item.recipient, data=raw, headers=headers, timeout=self.timeout) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return SendResult("sent")
                outcome = "retry" if resp.status >= 500 or resp.status == 429 else "failed"
                return SendResult(outcome, error=f"HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return SendResult("retry", error=f"{type(exc).__name__}: {exc}")
