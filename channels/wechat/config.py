"""WeChat apps (mini-programs and official accounts) from HOTLINE_WECHAT_APPS: inline JSON, or the
path of a JSON or YAML file. Checked once at start, so a typo fails loudly instead of a 403 later."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KINDS = ("miniprogram", "official")
MODES = ("plaintext", "compatible", "secure")
FORMATS = ("xml", "json")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,23}$")  # "wxmedia:" + name fits a channel column (32)
APPID_RE = re.compile(r"^wx[0-9A-Za-z]{16}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9]{3,32}$")  # what the WeChat console accepts
AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")
FIELDS = {"name", "kind", "appid", "secret", "token", "encoding_aes_key", "mode", "format"}


class WeChatConfigError(ValueError):
    """HOTLINE_WECHAT_APPS is malformed; the message names the app and the key."""


@dataclass(frozen=True)
class WeChatApp:
    name: str
    kind: str
    appid: str
    secret: str
    token: str
    encoding_aes_key: str
    mode: str
    format: str

    @property
    def channel(self) -> str:
        """The conversation/outbox channel name: one per app, so each app's sender has its credentials."""
        return f"wechat:{self.name}"

    @property
    def media_channel(self) -> str:
        """The outbox channel of media downloads (the outbox's leases and retries serve fetches too)."""
        return f"wxmedia:{self.name}"

    @property
    def aes_key(self) -> bytes:
        return base64.b64decode(self.encoding_aes_key + "=")

    def __repr__(self) -> str:  # never print secrets
        return f"WeChatApp(name={self.name!r}, kind={self.kind!r}, appid={self.appid!r}, mode={self.mode!r})"


def _app(entry: Any, index: int) -> WeChatApp:
    where = f"app #{index + 1}"
    if not isinstance(entry, dict):
        raise WeChatConfigError(f"{where}: expected an object")
    where = f"app {entry.get('name', index + 1)!r}"
    unknown = sorted(set(entry) - FIELDS)
    if unknown:
        raise WeChatConfigError(f"{where}: unknown keys {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}")
    values = {k: entry.get(k, "") for k in FIELDS} | {
        "mode": entry.get("mode", "secure"),
        "format": entry.get("format", "xml"),
    }
    for key, value in values.items():
        if not isinstance(value, str):
            raise WeChatConfigError(f"{where}: {key} must be a string")
    checks = [
        ("name", NAME_RE.match(values["name"]), "1-24 of a-z, 0-9, _ and -, starting with a letter or digit"),
        ("kind", values["kind"] in KINDS, f"one of {', '.join(KINDS)}"),
        ("appid", APPID_RE.match(values["appid"]), "wx followed by 16 letters or digits"),
        ("secret", values["secret"], "the AppSecret, needed to send replies"),
        ("token", TOKEN_RE.match(values["token"]), "3-32 letters or digits, as in the WeChat console"),
        ("mode", values["mode"] in MODES, f"one of {', '.join(MODES)}"),
        ("format", values["format"] in FORMATS, f"one of {', '.join(FORMATS)}"),
    ]
    if values["mode"] != "plaintext" or values["encoding_aes_key"]:
        checks.append(("encoding_aes_key", AES_KEY_RE.match(values["encoding_aes_key"]), "43 letters or digits"))
    for key, ok, expected in checks:
        if not ok:
            raise WeChatConfigError(f"{where}: {key}: expected {expected}")
    if values["encoding_aes_key"]:
        try:
            if len(base64.b64decode(values["encoding_aes_key"] + "=", validate=True)) != 32:
                raise ValueError
        except (binascii.Error, ValueError) as exc:
            raise WeChatConfigError(f"{where}: encoding_aes_key does not decode to a 32-byte key") from exc
    return WeChatApp(**values)


def load_apps(raw: str) -> dict[str, WeChatApp]:
    """Parse the setting; an empty one means no WeChat channel."""
    raw = raw.strip()
    if not raw:
        return {}
    if raw[0] in "[{":
        source, text, is_json = "HOTLINE_WECHAT_APPS", raw, True
    else:
        path = Path(raw)
        if not path.is_file():
            raise WeChatConfigError(f"HOTLINE_WECHAT_APPS: {raw} is neither inline JSON nor a readable file")
        source, text, is_json = str(path), path.read_text(encoding="utf-8"), path.suffix == ".json"
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise WeChatConfigError(f"{source}: not valid JSON/YAML: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("apps", [data])
    if not isinstance(data, list):
        raise WeChatConfigError(f"{source}: expected a list of apps (or {{apps: [...]}})")
    apps: dict[str, WeChatApp] = {}
    for i, entry in enumerate(data):
        app = _app(entry, i)
        if app.name in apps:
            raise WeChatConfigError(f"{source}: app name {app.name!r} used twice")
        apps[app.name] = app
    return apps
