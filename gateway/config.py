"""Settings from the environment, read once at start (see the README's configuration table)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_API_TOKEN = "dev-token-change-me"  # accepted on loopback only (Settings.insecure_reason)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class Settings:
    database_url: str = f"sqlite+aiosqlite:///{ROOT / 'var' / 'hotline.db'}"
    redis_url: str | None = None
    rasa_url: str = "http://127.0.0.1:5005"  # several, comma-separated: servers sharing a tracker store
    action_url: str = ""  # the action server, for /healthz only; empty = not checked
    rasa_token: str = ""  # Rasa's --auth-token (`hotline run` makes one per start when unset)
    # Key of the HMAC that names each citizen's Rasa tracker; empty = a random key kept in var/tracker.key
    # (one host). Replicas on several hosts must share it; changing it starts every tracker afresh.
    tracker_secret: str = ""
    # Rasa's SQL tracker store as an async SQLAlchemy URL, for `hotline retention run` (its `events`
    # table); empty = var/rasa_tracker.db when `hotline run` made one.
    tracker_db_url: str = ""
    profile: str = "jiyuan"
    api_token: str = DEFAULT_API_TOKEN
    host: str = "127.0.0.1"  # loopback unless told: a public address also needs a real HOTLINE_API_TOKEN
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
    sms_template_reply: str = ""  # template code/id per kind (docs/sms_templates.md): conversation replies
    sms_template_notice: str = ""  # news of a work order (a handling unit's answer)
    sms_template_survey: str = ""  # the satisfaction SMS, three levels
    sms_template_survey5: str = ""  # the satisfaction SMS, five levels (好差评)
    sms_template_ack: str = ""  # a request kept: its number and answer date
    sms_template_code: str = ""  # a one-time code (a verification-code template)
    sms_template_texts: str = ""  # JSON {kind: approved wording} where it differs from the default
    sms_variable_max_chars: int = 0  # per-variable limit the provider's console shows; 0: its published one
    sms_api_url: str = ""  # provider endpoint; empty = the provider's public one
    sms_timeout_s: float = 5.0
    sms_callback_token: str = ""  # required as ?token= on the SMS callback URLs when set
    ticket_callback_secret: str = ""  # HMAC-SHA256 key of external ticket-system callbacks
    ticket_callback_window_s: int = 300
    ticket_webhook_url: str = ""  # where to tell an external ticket system about reopened orders
    survey_interval_s: float = 30.0
    wechat_apps: str = ""  # inline JSON or a JSON/YAML file listing the WeChat apps (channels/wechat/config.py)
    wechat_api_base: str = "https://api.weixin.qq.com"
    # A push's signed timestamp may be this far from our clock; its nonce is then used once per body.
    wechat_max_skew_s: int = 300
    # Pages on these origins (comma-separated, e.g. https://12345.example.gov.cn) may open /ws; the
    # gateway's own origin always may. A browser sends cookies and its origin on any site's WebSocket.
    web_origins: str = ""
    # Web messages per client address per minute, across every sender id it uses (rotating ids do not
    # get around it); 0 = no limit. Behind a proxy, the proxy must pass the client's address on.
    web_address_per_minute: int = 120
    console_secret: str = ""  # signs and encrypts the agents' console cookie; empty = random per process
    console_secure_cookie: bool = False  # set when the console is served over HTTPS (it should be)
    # Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For the console's
    # login lockout believes; from anyone else the header is ignored (it could be forged).
    trusted_proxies: str = ""
    console_seen_s: float = 30.0  # an open console socket marks its agent online this often (the page no longer polls)

    def insecure_reason(self) -> str | None:
        """Why this gateway must not start as configured, in one line; None when it may. Bound to a
        non-loopback address, the default or an empty API token would open every order to anyone."""
        if _loopback(self.host):
            return None
        if self.api_token in ("", DEFAULT_API_TOKEN) or len(self.api_token) < 16:
            return (f"refusing to listen on {self.host} with the default, empty or short HOTLINE_API_TOKEN: "
                    "set a random token of at least 16 characters (or use named tokens: hotline tokens add)")
        return None

    def tracker_key(self) -> bytes:
        """HOTLINE_TRACKER_SECRET, or a random key made once and kept beside the database (0600)."""
        if self.tracker_secret:
            return self.tracker_secret.encode()
        path = ROOT / "var" / "tracker.key"
        if not path.exists():  # written whole, then linked into place: a replica starting at the
            path.parent.mkdir(parents=True, exist_ok=True)  # same moment never reads a half-written key
            draft = path.with_name(f".tracker.key.{os.getpid()}")
            with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
                out.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
            draft.unlink()
        return path.read_text().strip().encode()

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("HOTLINE_DATABASE_URL", cls.database_url),
            redis_url=os.environ.get("HOTLINE_REDIS_URL") or None,
            rasa_url=os.environ.get("HOTLINE_RASA_URL", cls.rasa_url).rstrip("/"),
            rasa_token=os.environ.get("HOTLINE_RASA_TOKEN", cls.rasa_token),
            tracker_secret=os.environ.get("HOTLINE_TRACKER_SECRET", cls.tracker_secret),
            tracker_db_url=os.environ.get("HOTLINE_TRACKER_DB_URL", cls.tracker_db_url),
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
            sms_template_notice=os.environ.get("HOTLINE_SMS_TEMPLATE_NOTICE", cls.sms_template_notice),
            sms_template_survey=os.environ.get("HOTLINE_SMS_TEMPLATE_SURVEY", cls.sms_template_survey),
            sms_template_survey5=os.environ.get("HOTLINE_SMS_TEMPLATE_SURVEY5", cls.sms_template_survey5),
            sms_template_ack=os.environ.get("HOTLINE_SMS_TEMPLATE_ACK", cls.sms_template_ack),
            sms_template_code=os.environ.get("HOTLINE_SMS_TEMPLATE_CODE", cls.sms_template_code),
            sms_template_texts=os.environ.get("HOTLINE_SMS_TEMPLATE_TEXTS", cls.sms_template_texts),
            sms_variable_max_chars=_int("HOTLINE_SMS_VARIABLE_MAX_CHARS", cls.sms_variable_max_chars),
            sms_api_url=os.environ.get("HOTLINE_SMS_API_URL", cls.sms_api_url).rstrip("/"),
            sms_timeout_s=float(os.environ.get("HOTLINE_SMS_TIMEOUT_S", cls.sms_timeout_s)),
            sms_callback_token=os.environ.get("HOTLINE_SMS_CALLBACK_TOKEN", cls.sms_callback_token),
            ticket_callback_secret=os.environ.get("HOTLINE_TICKET_CALLBACK_SECRET", cls.ticket_callback_secret),
            ticket_callback_window_s=_int("HOTLINE_TICKET_CALLBACK_WINDOW_S", cls.ticket_callback_window_s),
            ticket_webhook_url=os.environ.get("HOTLINE_TICKET_WEBHOOK_URL", cls.ticket_webhook_url),
            survey_interval_s=float(os.environ.get("HOTLINE_SURVEY_INTERVAL_S", cls.survey_interval_s)),
            wechat_apps=os.environ.get("HOTLINE_WECHAT_APPS", cls.wechat_apps),
            wechat_api_base=os.environ.get("HOTLINE_WECHAT_API_BASE", cls.wechat_api_base).rstrip("/"),
            wechat_max_skew_s=_int("HOTLINE_WECHAT_MAX_SKEW_S", cls.wechat_max_skew_s),
            web_origins=os.environ.get("HOTLINE_WEB_ORIGINS", cls.web_origins),
            web_address_per_minute=_int("HOTLINE_WEB_ADDRESS_PER_MINUTE", cls.web_address_per_minute),
            console_secret=os.environ.get("HOTLINE_CONSOLE_SECRET", cls.console_secret),
            console_secure_cookie=os.environ.get("HOTLINE_CONSOLE_SECURE_COOKIE", "") in ("1", "true", "yes"),
            trusted_proxies=os.environ.get("HOTLINE_TRUSTED_PROXIES", cls.trusted_proxies),
        )
