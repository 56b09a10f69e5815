"""The bot's custom payloads: the only way it asks the gateway to act.

Written by the action server (Python 3.10, Rasa's venv) and read by the gateway in another process,
so the shapes are defined here once, with the standard library only. `parse` is the gateway's
boundary: a payload that does not have its shape raises PayloadError instead of reaching the
work-order code half-read.

    {"intake": IntakeFields}       finished intake: create (or attach) the work order
    {"withdraw": WithdrawFields}   withdraw one of the citizen's orders (confirmed after a question)
    {"supplement": SupplementFields}  add facts to one of the citizen's orders
    {"handoff": "agent"}           the citizen asked for a person
    {"screened": ScreenedFields}   not a matter for a work order (kept for statistics)
    {"noted" | "answered" | "declined" | "cancelled": ...}  kept for statistics only
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

INFORMATIONAL = ("screened", "noted", "answered", "declined", "cancelled")


class IntakeFields(TypedDict):
    intake_id: str
    profile: str
    category: str
    urgent: bool
    urgent_rule: str | None
    real_name_rule: str | None
    confidential: bool
    id_number: str | None
    content: str | None
    event_time: str | None
    place: str | None
    phone: str | None
    name: str | None
    anonymous: bool
    screening_doubt: str | None  # a refusal rule nearly applied: the dispatcher decides


class WithdrawFields(TypedDict):
    number: str | None
    phone: str | None
    confirmed: bool


class SupplementFields(TypedDict, total=False):
    number: str | None
    phone: str | None
    text: str | None


class ScreenedFields(TypedDict, total=False):
    reason: str
    article: str | None
    confidence: float


class PayloadError(ValueError):
    """A payload from the bot without the shape agreed here."""


@dataclass(frozen=True)
class Intake:
    fields: IntakeFields


@dataclass(frozen=True)
class Withdraw:
    number: str | None
    phone: str | None
    confirmed: bool


@dataclass(frozen=True)
class Supplement:
    number: str | None
    phone: str | None
    text: str


@dataclass(frozen=True)
class Handoff:
    to: str


@dataclass(frozen=True)
class Informational:
    """Nothing to do: the payload is kept with the message for statistics. kind "unknown": a key
    this gateway does not know (a newer bot); the router logs it rather than apologising."""

    kind: str


Action = Intake | Withdraw | Supplement | Handoff | Informational

_INTAKE_TEXT = (
    "urgent_rule", "real_name_rule", "id_number", "content", "event_time", "place", "phone", "name", "screening_doubt",
)
_INTAKE_FLAGS = ("urgent", "confidential", "anonymous")


def _optional_text(body: dict[str, Any], key: str, where: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise PayloadError(f"{where}.{key} must be a string or null, not {type(value).__name__}")
    return value


def _object(payload: dict[str, Any], key: str) -> dict[str, Any]:
    body = payload[key]
    if not isinstance(body, dict):
        raise PayloadError(f"{key} must be an object, not {type(body).__name__}")
    return body


def parse(payload: Any) -> Action:
    """Read one custom payload; PayloadError says what is wrong with it."""
    if not isinstance(payload, dict):
        raise PayloadError(f"a payload must be an object, not {type(payload).__name__}")
    if "intake" in payload:
        body = _object(payload, "intake")
        for key in ("intake_id", "category"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise PayloadError(f"intake.{key} must be a non-empty string")
        for key in _INTAKE_TEXT + ("profile",):
            _optional_text(body, key, "intake")
        for key in _INTAKE_FLAGS:
            if not isinstance(body.get(key, False), bool):
                raise PayloadError(f"intake.{key} must be true or false")
        return Intake(body)  # type: ignore[arg-type] - checked field by field above
    if "withdraw" in payload:
        body = _object(payload, "withdraw")
        confirmed = body.get("confirmed", False)
        if not isinstance(confirmed, bool):
            raise PayloadError("withdraw.confirmed must be true or false")
        return Withdraw(_optional_text(body, "number", "withdraw"), _optional_text(body, "phone", "withdraw"), confirmed)
    if "supplement" in payload:
        body = _object(payload, "supplement")
        return Supplement(_optional_text(body, "number", "supplement"), _optional_text(body, "phone", "supplement"),
                          _optional_text(body, "text", "supplement") or "")
    if "handoff" in payload:
        if payload["handoff"] != "agent":
            raise PayloadError(f"handoff must be \"agent\", not {payload['handoff']!r}")
        return Handoff("agent")
    kind = next((k for k in INFORMATIONAL if k in payload), None)
    return Informational(kind or "unknown")  # a newer bot's payload: kept, not acted on
