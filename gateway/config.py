"""Settings from the environment, read once at start (see the README's configuration table)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class Settings:
    database_url: str = f"sqlite+aiosqlite:///{ROOT / 'var' / 'hotline.db'}"
    redis_url: str | None = None
    rasa_url: str = "http://127.0.0.1:5005"  # several, comma-separated: servers sharing a tracker store
    action_url: str = ""  # the action server, for /healthz only; empty = not checked
    profile: str = "jiyuan"
    api_token: str = "dev-token-change-me"
    host: str = "0.0.0.0"
    port: int = 8080
    max_body_bytes: int = 64 * 1024
    max_text_chars: int = 2000
    bot_timeout_s: float = 30.0
    bot_concurrency: int = 4  # messages in Rasa at once, admitted in arrival order; 0 = no limit
    answer_concurrency: int = 4  # WeChat/SMS conversations answered at once (more only wait at the bot gate)
    retry_interval_s: float = 5.0
    outbox_interval_s: float = 1.0
    # SMS channel and survey
    sms_provider: str = "log"  # log | alibaba | tencent
    sms_sign_name: str = "12345热线"
    sms_key_id: str = ""  # Alibaba AccessKey ID / Tencent SecretId
    sms_key_secret: str = ""  # Alibaba AccessKey secret / Tencent SecretKey
    sms_app_id: str = ""  # Tencent SmsSdkAppId
    sms_region: str = "ap-guangzhou"  # Tencent region
    sms_template_reply: str = ""  # template code/id with one variable: replies and notices
    sms_template_survey: str = ""  # template code/id with one variable: the survey
    sms_api_url: str = ""  # provider endpoint; empty = the provider's public one
    sms_timeout_s: float = 5.0
    sms_segment_chars: int = 70
    sms_callback_token: str = ""  # required as ?token= on the SMS callback URLs when set
    ticket_callback_secret: str = ""  # HMAC-SHA256 key of external ticket-system callbacks
    ticket_callback_window_s: int = 300
    ticket_webhook_url: str = ""  # where to tell an external ticket system about reopened orders
    survey_interval_s: float = 30.0
    wechat_apps: str = ""  # inline JSON or a JSON/YAML file listing the WeChat apps (channels/wechat/config.py)
    wechat_api_base: str = "https://api.weixin.qq.com"
    # A push's signed timestamp may be this far from our clock; its nonce is then used once per body.
    wechat_max_skew_s: int = 300
    console_secret: str = ""  # signs and encrypts the agents' console cookie; empty = random per process
    console_secure_cookie: bool = False  # set when the console is served over HTTPS (it should be)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("HOTLINE_DATABASE_URL", cls.database_url),
            redis_url=os.environ.get("HOTLINE_REDIS_URL") or None,
            rasa_url=os.environ.get("HOTLINE_RASA_URL", cls.rasa_url).rstrip("/"),
            action_url=os.environ.get("HOTLINE_ACTION_URL", cls.action_url).rstrip("/"),
            profile=os.environ.get("HOTLINE_PROFILE", cls.profile),
            api_token=os.environ.get("HOTLINE_API_TOKEN", cls.api_token),
            host=os.environ.get("HOTLINE_HOST", cls.host),
            port=_int("HOTLINE_PORT", cls.port),
            max_body_bytes=_int("HOTLINE_MAX_BODY_BYTES", cls.max_body_bytes),
            max_text_chars=_int("HOTLINE_MAX_TEXT_CHARS", cls.max_text_chars),
            bot_timeout_s=float(os.environ.get("HOTLINE_BOT_TIMEOUT_S", cls.bot_timeout_s)),
            bot_concurrency=_int("HOTLINE_BOT_CONCURRENCY", cls.bot_concurrency),
            answer_concurrency=_int("HOTLINE_ANSWER_CONCURRENCY", cls.answer_concurrency),
            retry_interval_s=float(os.environ.get("HOTLINE_RETRY_INTERVAL_S", cls.retry_interval_s)),
            outbox_interval_s=float(os.environ.get("HOTLINE_OUTBOX_INTERVAL_S", cls.outbox_interval_s)),
            sms_provider=os.environ.get("HOTLINE_SMS_PROVIDER", cls.sms_provider),
            sms_sign_name=os.environ.get("HOTLINE_SMS_SIGN_NAME", cls.sms_sign_name),
            sms_key_id=os.environ.get("HOTLINE_SMS_KEY_ID", cls.sms_key_id),
            sms_key_secret=os.environ.get("HOTLINE_SMS_KEY_SECRET", cls.sms_key_secret),
            sms_app_id=os.environ.get("HOTLINE_SMS_APP_ID", cls.sms_app_id),
            sms_region=os.environ.get("HOTLINE_SMS_REGION", cls.sms_region),
            sms_template_reply=os.environ.get("HOTLINE_SMS_TEMPLATE_REPLY", cls.sms_template_reply),
            sms_template_survey=os.environ.get("HOTLINE_SMS_TEMPLATE_SURVEY", cls.sms_template_survey),
            sms_api_url=os.environ.get("HOTLINE_SMS_API_URL", cls.sms_api_url).rstrip("/"),
            sms_timeout_s=float(os.environ.get("HOTLINE_SMS_TIMEOUT_S", cls.sms_timeout_s)),
            sms_segment_chars=_int("HOTLINE_SMS_SEGMENT_CHARS", cls.sms_segment_chars),
            sms_callback_token=os.environ.get("HOTLINE_SMS_CALLBACK_TOKEN", cls.sms_callback_token),
            ticket_callback_secret=os.environ.get("HOTLINE_TICKET_CALLBACK_SECRET", cls.ticket_callback_secret),
            ticket_callback_window_s=_int("HOTLINE_TICKET_CALLBACK_WINDOW_S", cls.ticket_callback_window_s),
            ticket_webhook_url=os.environ.get("HOTLINE_TICKET_WEBHOOK_URL", cls.ticket_webhook_url),
            survey_interval_s=float(os.environ.get("HOTLINE_SURVEY_INTERVAL_S", cls.survey_interval_s)),
            wechat_apps=os.environ.get("HOTLINE_WECHAT_APPS", cls.wechat_apps),
            wechat_api_base=os.environ.get("HOTLINE_WECHAT_API_BASE", cls.wechat_api_base).rstrip("/"),
            wechat_max_skew_s=_int("HOTLINE_WECHAT_MAX_SKEW_S", cls.wechat_max_skew_s),
            console_secret=os.environ.get("HOTLINE_CONSOLE_SECRET", cls.console_secret),
            console_secure_cookie=os.environ.get("HOTLINE_CONSOLE_SECURE_COOKIE", "") in ("1", "true", "yes"),
        )
