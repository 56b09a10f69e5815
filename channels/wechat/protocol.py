"""WeChat's message-push protocol without I/O: signatures, the AES envelope, XML/JSON payloads,
and the mapping of each message kind to the gateway's InboundMessage.

wechatpy does the SHA-1 signing, the AES frame and the message classes; we compare signatures
ourselves in constant time (wechatpy uses `!=`), and parse XML with defusedxml so that a DTD,
an entity or an external reference is refused instead of expanded (wechatpy's xmltodict path is
never given untrusted bytes).
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Mapping
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_xml
from wechatpy.crypto import PrpCrypto
from wechatpy.events import EVENT_TYPES
from wechatpy.messages import MESSAGE_TYPES, BaseMessage, UnknownMessage
from wechatpy.utils import WeChatSigner

from channels.wechat.config import WeChatApp
from common.messages import InboundMessage
from gateway.http import BadJson, load_json

OPENID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
GREETING_TEXT = "你好"  # what the bot is told when a citizen opens the chat: it answers with its greeting
GREETING_EVENTS = {"user_enter_tempsession", "subscribe"}
MEDIA_KINDS = {
    "image": {"MediaId": "media_id", "PicUrl": "pic_url"},
    "voice": {"MediaId": "media_id", "Format": "format", "Recognition": "recognition"},
    "video": {"MediaId": "media_id", "ThumbMediaId": "thumb_media_id"},
    "shortvideo": {"MediaId": "media_id", "ThumbMediaId": "thumb_media_id"},
    "file": {"Title": "title", "Description": "description", "FileKey": "file_key", "FileMd5": "file_md5"},
    "link": {"Title": "title", "Description": "description", "Url": "url"},
    "miniprogrampage": {"Title": "title", "AppId": "app_id", "PagePath": "page_path", "ThumbMediaId": "thumb_media_id"},
    "location": {"Location_X": "x", "Location_Y": "y", "Scale": "scale", "Label": "label"},
}


class PushError(Exception):
    """A push we refuse; `status` is the HTTP answer (WeChat never sees these: only forgeries do)."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Forbidden(PushError):
    status = 403


class BadPush(PushError):
    status = 400


def sign(*parts: str) -> str:
    """sha1 of the sorted, concatenated parts: WeChat's `signature` (3 parts) and `msg_signature` (4)."""
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def check_url_signature(token: str, query: Mapping[str, str]) -> None:
    """The `signature` query parameter: present on verification and on every push, in every mode."""
    signature, timestamp, nonce = (query.get(k, "") for k in ("signature", "timestamp", "nonce"))
    if not (signature and timestamp and nonce):
        raise Forbidden("signature, timestamp and nonce are required")
    if not _same(sign(token, timestamp, nonce), signature):
        raise Forbidden("signature does not match")


def _xml_value(node: Element) -> Any:
    children = list(node)
    if not children:
        return node.text or ""
    return {child.tag: _xml_value(child) for child in children}


def parse_xml(raw: bytes) -> dict[str, Any]:
    try:
        root = safe_xml(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise BadPush(f"XML with a DTD or entities is refused ({type(exc).__name__})") from exc
    except (ParseError, ValueError) as exc:
        raise BadPush(f"body is not well-formed XML: {exc}") from exc
    if root.tag != "xml":
        raise BadPush("XML root element must be <xml>")
    value = _xml_value(root)
    return value if isinstance(value, dict) else {}


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        data = load_json(raw)
    except BadJson as exc:
        raise BadPush(str(exc)) from exc
    if not isinstance(data, dict):
        raise BadPush("JSON body must be an object")
    # XML carries every value as text; JSON's numbers (MsgId is 64-bit) become the same strings.
    return {k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for k, v in data.items()}


def parse_body(raw: bytes, fmt: str) -> dict[str, Any]:
    return parse_json(raw) if fmt == "json" else parse_xml(raw)


def open_push(app: WeChatApp, query: Mapping[str, str], raw: bytes) -> dict[str, Any]:
    """A POST body (URL signature already checked) → the plaintext message fields.

    Secure and compatible modes: `msg_signature` over the ciphertext is checked first (403), then
    the AES frame is opened and its appid compared (400). In secure mode a plaintext push is refused.
    """
    encrypt_type = query.get("encrypt_type", "raw") or "raw"
    if encrypt_type not in ("raw", "aes"):
        raise BadPush(f"unsupported encrypt_type {encrypt_type!r}")
    encrypted = encrypt_type == "aes"
    if app.mode == "secure" and not encrypted:
        raise Forbidden("this app is in secure mode: plaintext pushes are refused")
    if app.mode == "plaintext" and encrypted:
        raise BadPush("this app is configured for plaintext mode but the push is encrypted")
    envelope = parse_body(raw, app.format)
    if not encrypted:
        return envelope
    encrypt = envelope.get("Encrypt")
    if not isinstance(encrypt, str) or not encrypt:
        raise BadPush("encrypted push without an Encrypt field")
    msg_signature = query.get("msg_signature", "")
    if not msg_signature:
        raise Forbidden("msg_signature is required for encrypted pushes")
    if not _same(sign(app.token, query["timestamp"], query["nonce"], encrypt), msg_signature):
        raise Forbidden("msg_signature does not match")
    try:
        plaintext = PrpCrypto(app.aes_key).decrypt(encrypt, app.appid)
    except Exception as exc:  # noqa: BLE001 - garbage in any of base64, AES, the frame or the appid
        raise BadPush("cannot decrypt: wrong EncodingAESKey, another app's message, or tampered ciphertext") from exc
    return parse_body(plaintext.encode("utf-8"), app.format)


def encrypt_reply(
    app: WeChatApp, plaintext: str, nonce: str, timestamp: str | None = None, crypto: type[PrpCrypto] = PrpCrypto
) -> str:
    """The encrypted passive-reply envelope in the app's data format (wechatpy only builds XML).
    Our pushes are answered with `success` (no encryption needed); this is for passive replies."""
    timestamp = timestamp or str(int(time.time()))
    encrypt = crypto(app.aes_key).encrypt(plaintext, app.appid).decode()
    signature = sign(app.token, timestamp, nonce, encrypt)
    if app.format == "json":
        return json.dumps(
            {"Encrypt": encrypt, "MsgSignature": signature, "TimeStamp": int(timestamp), "Nonce": nonce},
            ensure_ascii=False,
        )
    return (
        f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt><MsgSignature><![CDATA[{signature}]]></MsgSignature>"
        f"<TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>"
    )


def wechat_message(fields: dict[str, Any]) -> BaseMessage:
    """wechatpy's message class for already-parsed fields (its own parse_message is XML-only)."""
    msg_type = str(fields.get("MsgType", "")).lower()
    if msg_type == "event":
        return EVENT_TYPES.get(str(fields.get("Event", "")).lower(), UnknownMessage)(fields)
    return MESSAGE_TYPES.get(msg_type, UnknownMessage)(fields)


def _attachment(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    for source, key in MEDIA_KINDS.get(kind, {}).items():
        value = fields.get(source)
        if isinstance(value, str) and value:
            out[key] = value[:1024]
    return out


def to_inbound(app: WeChatApp, fields: dict[str, Any]) -> InboundMessage:
    """One push → one InboundMessage. Text goes to the bot; opening the chat is a greeting; media,
    cards and unknown kinds are kept as attachments with no text (the router asks for a description);
    a location's label is sent as text so the bot's place extraction fills the place fact."""
    sender, msg_type = fields.get("FromUserName"), fields.get("MsgType")
    if not isinstance(sender, str) or not OPENID_RE.match(sender):
        raise BadPush("FromUserName must be an openid")
    if not isinstance(msg_type, str) or not re.fullmatch(r"[A-Za-z_]{1,32}", msg_type):
        raise BadPush("MsgType missing or malformed")
    msg_type = msg_type.lower()
    msg = wechat_message(fields)
    try:
        created, msg_id = int(msg.time or 0), int(msg.id or 0)
    except (TypeError, ValueError) as exc:
        raise BadPush("CreateTime and MsgId must be integers") from exc
    if not (0 <= created < 2**40 and 0 <= msg_id < 2**64):  # MsgId is a 64-bit integer
        raise BadPush("CreateTime or MsgId out of range")
    # WeChat's advice: dedupe messages by MsgId, events by FromUserName + CreateTime.
    text, attachments = "", ()
    if msg_type == "event":
        event = str(fields.get("Event", "")).lower()
        event = event if re.fullmatch(r"[a-z0-9_]{1,32}", event) else "unknown"
        message_id = f"{event}@{created}"
        if event in GREETING_EVENTS:
            text = GREETING_TEXT
        else:
            attachments = ({"type": "event", "event": event},)
        return InboundMessage(app.channel, sender, text, message_id=message_id, attachments=attachments)
    message_id = str(msg_id) if msg_id else f"{msg_type}@{created}"
    if msg_type == "text":
        content = msg.content  # wechatpy's TextMessage
        text = content.strip() if isinstance(content, str) else ""
        if not text:
            attachments = ({"type": "empty"},)
    else:
        attachment = _attachment(msg_type, fields)
        attachments = (attachment,)
        if msg_type == "voice":
            text = attachment.get("recognition", "").strip()  # official accounts may transcribe voice
        elif msg_type == "location":
            text = attachment.get("label", "").strip()
    return InboundMessage(app.channel, sender, text, message_id=message_id, attachments=attachments)
