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
    rasa_url: str = "http://127.0.0.1:5005"
    profile: str = "jiyuan"
    api_token: str = "dev-token-change-me"
    host: str = "0.0.0.0"
    port: int = 8080
    max_body_bytes: int = 64 * 1024
    max_text_chars: int = 2000
    bot_timeout_s: float = 30.0
    retry_interval_s: float = 5.0
    outbox_interval_s: float = 1.0
    wechat_apps: str = ""  # inline JSON or a JSON/YAML file listing the WeChat apps (channels/wechat/config.py)
    wechat_api_base: str = "https://api.weixin.qq.com"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("HOTLINE_DATABASE_URL", cls.database_url),
            redis_url=os.environ.get("HOTLINE_REDIS_URL") or None,
            rasa_url=os.environ.get("HOTLINE_RASA_URL", cls.rasa_url).rstrip("/"),
            profile=os.environ.get("HOTLINE_PROFILE", cls.profile),
            api_token=os.environ.get("HOTLINE_API_TOKEN", cls.api_token),
            host=os.environ.get("HOTLINE_HOST", cls.host),
            port=_int("HOTLINE_PORT", cls.port),
            max_body_bytes=_int("HOTLINE_MAX_BODY_BYTES", cls.max_body_bytes),
            max_text_chars=_int("HOTLINE_MAX_TEXT_CHARS", cls.max_text_chars),
            bot_timeout_s=float(os.environ.get("HOTLINE_BOT_TIMEOUT_S", cls.bot_timeout_s)),
            retry_interval_s=float(os.environ.get("HOTLINE_RETRY_INTERVAL_S", cls.retry_interval_s)),
            outbox_interval_s=float(os.environ.get("HOTLINE_OUTBOX_INTERVAL_S", cls.outbox_interval_s)),
            wechat_apps=os.environ.get("HOTLINE_WECHAT_APPS", cls.wechat_apps),
            wechat_api_base=os.environ.get("HOTLINE_WECHAT_API_BASE", cls.wechat_api_base).rstrip("/"),
        )
