"""SMS templates a provider would approve: one per purpose (common/sms.py), with typed variables,
checked against the providers' published rules when the gateway starts, and each SMS's cost counted
per template.

Both providers send only approved templates: fixed text with variables. Their rules (cited with
addresses in docs/sms_templates.md) that this module enforces:
- no all-variable template, no two variables side by side, each variable once (Alibaba 108088;
  Tencent 39023); no 【】 in a template; no 退订 line in a notice (Alibaba 463270);
- banned topics include 问卷调查 and 邀请好评 (Alibaba 463270, Tencent 39023);
- a variable holds 1-35 characters (Alibaba 108088); Tencent sets the limit per account in its console
  (39023), 12 for accounts certified as a person, none for organisations (40659);
- a one-time code is 4-6 digits (Alibaba 463237) and at most 6 (Tencent 39023), in a template that
  says 验证码 (Alibaba 463237); no link passed in a variable (both);
- an SMS of up to 70 characters, 【signature】 and fixed text included, is one message; a longer one
  is billed per 67 (Alibaba 短信发送规则).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from common import sms as kinds

SINGLE, PART = 70, 67  # characters of one SMS; of each part of a concatenated one
MAX_TOTAL = 500  # characters of one SMS with signature and values (both providers)
MIN_ROOM = 12  # fewer characters of text per SMS than this is not worth a segment of its own
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_BREAKS = "。！？；\n"
_SOFT_BREAKS = "，、：,;:"
BANNED = ("问卷", "调查", "好评", "拒收请回复R", "退订")  # topics and lines the providers refuse in a notice
CODE_WORDS = ("验证码", "注册码", "校验码", "动态码")

# What each variable holds at most (the providers check the length of each value). `text` is free
# text the channel spreads over several SMS (or cuts, for the survey's summary of the answer).
DESIGN_MAX = {"no": 20, "hours": 3, "default": 5, "category": 4, "deadline": 10, "note": 16,
              "code": 6, "minutes": 2}
CUT = {kinds.SURVEY, kinds.SURVEY5}  # their text is a summary: cut to fit, the whole answer sent before

# The wording proposed to the providers for approval, one per kind (docs/sms_templates.md). An
# operator whose approved wording differs says so in HOTLINE_SMS_TEMPLATE_TEXTS.
DEFAULT_CONTENT = {
    kinds.REPLY: "热线回复：${text}",
    kinds.NOTICE: "您的工单尾号${no}答复：${text}",
    kinds.SURVEY: "您的工单尾号${no}已办理：${text}。回复1满意2基本满意3不满意，${hours}小时未回复视为${default}",
    kinds.SURVEY5: "您的工单尾号${no}已办理：${text}。回复1非常满意2满意3基本满意4不满意5非常不满意，"
                   "${hours}小时未回复视为${default}",
    kinds.ACK: "您的${category}诉求已受理，工单号${no}，承办单位将于${deadline}前答复，${note}。",
    kinds.CODE: "您的验证码为${code}，${minutes}分钟内有效，请勿告诉他人。",
}


@dataclass(frozen=True)
class ProviderRules:
    """What one provider allows in a variable."""

    name: str
    variable_max: int | None  # characters per variable; None: only the 500-character total
    code_min: int
    code_max: int


ALIBABA = ProviderRules("alibaba", 35, 4, 6)
TENCENT = ProviderRules("tencent", None, 1, 6)


def rules_for(provider: str, variable_max: int = 0) -> ProviderRules:
    """The provider's rules; `variable_max` (HOTLINE_SMS_VARIABLE_MAX_CHARS) lowers the per-variable
    limit to what the provider's console shows for the account (Tencent: 12 for a person's account)."""
    base = TENCENT if provider == "tencent" else ALIBABA  # the log provider shows what Alibaba would send
    if variable_max <= 0:
        return base
    if base.variable_max is not None and variable_max > base.variable_max:
        raise ValueError(f"HOTLINE_SMS_VARIABLE_MAX_CHARS={variable_max}: {base.name} allows at most "
                         f"{base.variable_max} characters per variable")
    return ProviderRules(base.name, variable_max, base.code_min, base.code_max)


@dataclass(frozen=True)
class Template:
    """An approved template: its provider id, its wording, and the variables in the order they appear
    (Tencent numbers them {1}, {2}… in that order)."""

    kind: str
    template_id: str
    content: str

    @property
    def names(self) -> list[str]:
        return _VAR.findall(self.content)

    @property
    def fixed(self) -> str:
        return _VAR.sub("", self.content)

    def render(self, values: Mapping[str, str]) -> str:
        return _VAR.sub(lambda m: values[m.group(1)], self.content)


@dataclass(frozen=True)
class Message:
    """One SMS to hand to the provider: the template, its values (in template order), the text the
    citizen reads (without the signature)."""

    template: Template
    values: dict[str, str]
    text: str


def parts(chars: int) -> int:
    """How many SMS the carriers bill for a message of this many characters (signature included)."""
    return 1 if chars <= SINGLE else math.ceil(chars / PART)


def check(template: Template, rules: ProviderRules, sign_name: str) -> list[str]:
    """Why a provider would refuse this template, or why it cannot carry its kind's variables."""
    problems: list[str] = []
    where = f"SMS template {template.kind} ({template.template_id or 'default wording'})"
    names = template.names
    expected = kinds.VARIABLES[template.kind]
    if sorted(names) != sorted(expected):
        problems.append(f"{where} must use each of {', '.join('${' + n + '}' for n in expected)} once; "
                        f"it has {', '.join('${' + n + '}' for n in names) or 'none'}")
    if "}${" in template.content:
        problems.append(f"{where}: two variables side by side (neither provider allows it)")
    fixed = template.fixed
    if not fixed.strip():
        problems.append(f"{where}: only variables (neither provider allows it)")
    if "【" in fixed or "】" in fixed:
        problems.append(f"{where}: 【】 is the signature's; not in a template")
    banned = [word for word in BANNED if word in fixed]
    if banned:
        problems.append(f"{where}: {'、'.join(banned)} is refused in a notice template")
    if template.kind == kinds.CODE:
        if not any(word in fixed for word in CODE_WORDS):
            problems.append(f"{where}: a verification-code template must say 验证码 (or 注册码, 校验码, 动态码)")
        if DESIGN_MAX["code"] > rules.code_max:
            problems.append(f"{where}: {rules.name} takes codes of at most {rules.code_max} digits")
    for name in names:
        if name == "text" or name == "code":
            continue
        if rules.variable_max is not None and DESIGN_MAX[name] > rules.variable_max:
            problems.append(f"{where}: ${{{name}}} holds up to {DESIGN_MAX[name]} characters, "
                            f"{rules.name} allows {rules.variable_max} here")
    longest = len(sign_name) + 2 + len(fixed) + sum(DESIGN_MAX.get(n, 1) for n in names if n != "text")
    if longest >= MAX_TOTAL:
        problems.append(f"{where}: {longest} characters before any text; an SMS holds {MAX_TOTAL}")
    return problems


class Templates:
    """The templates of one provider, checked at start, and how a queued SMS becomes messages."""

    def __init__(self, templates: Mapping[str, Template], rules: ProviderRules, sign_name: str) -> None:
        if kinds.REPLY not in templates:
            raise ValueError("an SMS provider needs a reply template (HOTLINE_SMS_TEMPLATE_REPLY)")
        problems = [p for t in templates.values() for p in check(t, rules, sign_name)]
        if problems:
            raise ValueError("; ".join(problems))
        self.templates = dict(templates)
        self.rules = rules
        self.sign_name = sign_name

    def messages(self, kind: str, values: Mapping[str, str] | None, text: str) -> list[Message]:
        """The SMS to send for one queued item: its kind's template when there is one and the values
        fit it, else the reply template with the plain text. Free text goes over as many SMS as it
        needs, each one segment where the provider's limits allow."""
        template = self.templates.get(kind)
        if template is not None and values is not None and set(values) >= set(template.names):
            clean = {name: sanitise(str(values[name])) for name in template.names}
            if self._fits(template, clean):
                return self._fill(template, clean)
        if kind == kinds.CODE:
            return []  # a code goes only in a verification-code template, never as a plain reply
        reply = self.templates[kinds.REPLY]
        plain = text or (DEFAULT_CONTENT[kind].replace("${", "{").format(**values)
                         if values is not None and kind in DEFAULT_CONTENT else "")
        return self._fill(reply, {"text": sanitise(plain)}) if plain.strip() else []

    def _fits(self, template: Template, values: Mapping[str, str]) -> bool:
        """Fixed variables within the provider's limits (a code within its digits)."""
        for name, value in values.items():
            if not value:
                return False
            if name == "code":
                if not (value.isdigit() and self.rules.code_min <= len(value) <= self.rules.code_max):
                    return False
            elif name != "text" and self.rules.variable_max is not None and len(value) > self.rules.variable_max:
                return False
        return True

    def room(self, template: Template, values: Mapping[str, str]) -> int:
        """Characters of `text` one SMS of this template can carry: one segment with the signature, the
        fixed text and the other values, unless that leaves too little (then one long SMS); never more
        than the provider takes in one variable."""
        used = len(self.sign_name) + 2 + len(template.fixed) + sum(len(v) for n, v in values.items() if n != "text")
        room = SINGLE - used
        if room < MIN_ROOM:  # a long template: two parts, else whatever the 500 characters leave
            room = 2 * PART - used if 2 * PART - used >= MIN_ROOM else MAX_TOTAL - used
        limit = self.rules.variable_max
        return max(1, min(room, limit) if limit is not None else room)

    def _fill(self, template: Template, values: dict[str, str]) -> list[Message]:
        if "text" not in values:
            return [Message(template, values, template.render(values))]
        room = self.room(template, values)
        text = values["text"]
        out: list[Message] = []
        if template.kind in CUT:  # the survey's wording ends the summary with its own "。"
            whole, text = text, text.rstrip("。.！!；;")
            if len(text) > room:  # it names the answer in a few words; the whole answer goes first, as notices
                notice = self.templates.get(kinds.NOTICE)
                if notice is not None and "no" in values:
                    out += self._fill(notice, {"no": values["no"], "text": whole})
                else:
                    out += self._fill(self.templates[kinds.REPLY], {"text": whole})
                text = text[: room - 1].rstrip("，。、；,.;") + "…"
        for piece in split(text, room) if template.kind not in CUT else [text]:
            filled = {**values, "text": piece}
            out.append(Message(template, {n: filled[n] for n in template.names}, template.render(filled)))
        return out

    def cost(self, message: Message) -> int:
        """The SMS the carriers bill for it: signature, fixed text and values counted."""
        return parts(len(self.sign_name) + 2 + len(message.text))


def sanitise(value: str) -> str:
    """A value the providers accept: no 【】 (the signature's), no link (neither passes one in a
    variable), one line, no runs of spaces."""
    value = value.replace("【", "（").replace("】", "）")
    value = _URL.sub("（网址略）", value)
    value = re.sub(r"\s*\n+\s*", "；", value.strip())
    return re.sub(r"[ \t]+", " ", value)


def split(text: str, room: int) -> list[str]:
    """Text in pieces of at most `room` characters, broken at sentence ends, then at commas, and only
    as a last resort inside a sentence. Short text stays whole."""
    text = text.strip()
    if len(text) <= room:
        return [text] if text else []
    pieces: list[str] = []
    rest = text
    while len(rest) > room:
        window = rest[:room]
        cut = max((window.rfind(c) for c in _BREAKS), default=-1)
        if cut < room // 3:
            cut = max(cut, max((window.rfind(c) for c in _SOFT_BREAKS), default=-1))
        if cut < room // 3:
            cut = room - 1
        pieces.append(rest[: cut + 1].strip().rstrip("；"))
        rest = rest[cut + 1 :].lstrip()
    if rest:
        pieces.append(rest)
    return [p for p in pieces if p]


def load(provider: str, ids: Mapping[str, str], texts: Mapping[str, str], sign_name: str,
         variable_max: int = 0) -> Templates:
    """The templates the configuration names, checked. The log provider has every kind, in the
    default wording, so what a citizen would read can be seen locally."""
    unknown = sorted(set(texts) - set(kinds.VARIABLES))
    if unknown:
        raise ValueError(f"HOTLINE_SMS_TEMPLATE_TEXTS names unknown kinds: {', '.join(unknown)}")
    chosen = {kind: Template(kind, ids.get(kind, "") or ("log" if provider == "log" else ""),
                             texts.get(kind) or DEFAULT_CONTENT[kind])
              for kind in kinds.VARIABLES}
    return Templates({k: t for k, t in chosen.items() if t.template_id}, rules_for(provider, variable_max),
                     sign_name)
