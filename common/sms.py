"""What an SMS is for, as the SMS channel's templates know it: the kinds and their variables.

Code that queues an SMS (the survey, the router, an identity check) names a kind and fills its
variables; the SMS channel sends it with the provider template approved for that kind
(channels/sms/templates.py; the wording and the providers' rules are in docs/sms_templates.md).
Variables are short, typed values, never a whole message: only `text` carries free text, and the
channel spreads a long one over several SMS.
"""

from __future__ import annotations

from typing import Any

REPLY = "reply"  # a conversation turn (the bot's or an agent's answer): free text
NOTICE = "notice"  # news of the citizen's own work order (a handling unit's answer, a held reply)
SURVEY = "survey"  # the satisfaction SMS, three levels (1满意2基本满意3不满意)
SURVEY5 = "survey5"  # the same on the 好差评 five-level scale (GB/T 39735-2020)
ACK = "ack"  # a request was kept: its number and the date of the answer
CODE = "code"  # a one-time code proving the citizen holds the phone

VARIABLES: dict[str, tuple[str, ...]] = {
    REPLY: ("text",),
    NOTICE: ("no", "text"),
    SURVEY: ("no", "text", "hours", "default"),
    SURVEY5: ("no", "text", "hours", "default"),
    ACK: ("category", "no", "deadline", "note"),
    CODE: ("code", "minutes"),
}


def body(kind: str, plain: str = "", /, **variables: str) -> dict[str, Any]:
    """An outbox body for channel "sms": the kind, its variables, and the plain text (shown where no
    template applies). Unknown kinds and missing variables are a programming error."""
    expected = VARIABLES[kind]
    if set(variables) != set(expected):
        raise ValueError(f"SMS kind {kind!r} takes variables {expected}, got {sorted(variables)}")
    return {"kind": kind, "vars": {name: str(variables[name]) for name in expected}, "text": plain}


def code_body(code: str, minutes: int) -> dict[str, Any]:
    """A one-time code SMS (the provider's verification-code template; 4-6 digits, Alibaba's rule)."""
    if not (code.isdigit() and 4 <= len(code) <= 6):
        raise ValueError("a one-time code is 4 to 6 digits")
    return body(CODE, f"您的验证码为{code}，{minutes}分钟内有效。", code=code, minutes=str(minutes))
