"""Jurisdiction profiles: each regulation's rules as data, loaded and checked once at start.

Pure standard library + PyYAML so that the gateway (current Python) and the bot's action server
(Python 3.10 with Rasa's pins) load exactly the same rules.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).resolve().parent
DEFAULT_PROFILE = "jiyuan"

REQUEST_KINDS = ("consult", "help", "complaint", "report", "suggestion", "praise")
SCREEN_KINDS = (
    "emergency",
    "legal_procedure",
    "outside_authority",
    "confidential",
    "civil_dispute",
    "no_substance",
    "out_of_jurisdiction",
    "repeat",
)
FACTS = ("content", "event_time", "place", "phone", "name", "id_number")
RATINGS = ("very_satisfied", "satisfied", "basically_satisfied", "unsatisfied", "very_unsatisfied")
AFTER_LAST_REDO = ("expert_review", "revisit", "close")


# YAML folds long lines with a space; between two CJK characters (or punctuation) that space is an error.
_CJK_GAP = re.compile(r"(?<=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])\s+(?=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])")


def citizen_text(value: str) -> str:
    return _CJK_GAP.sub("", value.strip())


class ProfileError(ValueError):
    """A profile file is malformed; the message names the file, the key and the problem."""

    def __init__(self, path: Path, key: str, problem: str) -> None:
        super().__init__(f"{path.name}: {key}: {problem}")
        self.path, self.key, self.problem = path, key, problem


@dataclass(frozen=True)
class Category:
    kind: str
    label: str
    limit_working_days: int


@dataclass(frozen=True)
class EmergencyService:
    number: str
    name: str
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class ScreenRule:
    kind: str
    article: str
    message: str


@dataclass(frozen=True)
class UrgentRule:
    """A kind of request handled faster (outages, pollution, disasters, vulnerable people)."""

    id: str
    label: str
    article: str
    keywords: tuple[str, ...]
    dispatch_hours: float | None = None  # the order must be dispatched within
    sign_minutes: float | None = None  # the handling unit must sign within
    onsite_hours: float | None = None  # someone must be on site within
    resolve_hours: float | None = None  # the matter must be closed within
    immediate: bool = False  # dispatched at once (内蒙古 第十条)

    def citizen_note(self) -> str:
        """One sentence for the citizen: what the rule promises, in the document's terms."""
        parts = []
        if self.immediate:
            parts.append("立即派发承办单位")
        elif self.dispatch_hours is not None:
            parts.append(f"{_hours(self.dispatch_hours)}内派发承办单位")
        if self.sign_minutes is not None:
            parts.append(f"承办单位{_hours(self.sign_minutes / 60)}内签收")
        if self.onsite_hours is not None:
            parts.append(f"{_hours(self.onsite_hours)}内到达现场")
        if self.resolve_hours is not None:
            parts.append(f"{_hours(self.resolve_hours)}内办结")
        return f"您反映的属于{self.label}，已按紧急诉求处理：" + "，".join(parts) + "。"


def _hours(hours: float) -> str:
    if hours < 1:
        return f"{round(hours * 60)}分钟"
    return f"{hours:g}小时"


@dataclass(frozen=True)
class RealNameRule:
    """Requests that need name, ID number and phone (桂林 第十二条) and how to recognise them."""

    id: str
    label: str
    keywords: tuple[str, ...]
    facts: tuple[str, ...]


@dataclass(frozen=True)
class RealNamePolicy:
    article: str
    rules: tuple[RealNameRule, ...]
    decline_message: str


@dataclass(frozen=True)
class RepeatRules:
    article: str
    similarity: float  # content similarity (0-1) above which two requests are the same matter
    escalate_after: int  # more repeats than this flag the order for escalation


@dataclass(frozen=True)
class WithdrawalRules:
    allowed: bool
    article: str
    supplement_restarts_clock: bool
    supplement_article: str


@dataclass(frozen=True)
class RetentionRules:
    """How long what citizens sent is kept before `hotline retention run` anonymises or deletes it.
    Work orders are the archive (归档) and are not touched."""

    article: str
    conversation_days: int  # chat messages: their text and attachments emptied, the sender pseudonymised
    tracker_days: int  # Rasa's tracker events (slots hold phones and names): deleted
    media_days: int  # pictures and voice notes (recordings): deleted


@dataclass(frozen=True)
class AbuseRules:
    """Flooding and abusive senders are limited for a time (济源 第三十三条); their messages are kept."""

    article: str
    flood_messages: int  # more than this many messages …
    flood_window_s: int  # … within this window is flooding
    strikes: int  # this many abusive messages limit the sender
    limit_hours: float
    keywords: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class SurveyRules:
    """How the satisfaction survey runs after a work order is replied to (回访 / 满意度评价)."""

    article: str
    send_within_working_days: int  # survey must go out within this many working days of the reply
    window_hours: float  # no reply within the window → default_rating
    default_rating: str  # one of RATINGS
    quiet_hours: tuple[int, int] | None  # (start, end) local hours when no survey SMS is sent
    allow_correction: bool  # the citizen may correct a mistaken rating within the window
    redo_extra_working_days: int | None  # a redo gets the kind's limit plus this; None → same limit
    max_redos: int  # unsatisfied after this many redos → after_last_redo
    after_last_redo: str  # one of AFTER_LAST_REDO
    # 3: 满意 / 基本满意 / 不满意; 5: the 好差评 scale of GB/T 39735-2020 (非常满意 … 非常不满意)
    scale: int = 3

    def is_quiet(self, hour: int) -> bool:
        if self.quiet_hours is None:
            return False
        start, end = self.quiet_hours
        return start <= hour or hour < end if start > end else start <= hour < end


@dataclass(frozen=True)
class HumanService:
    """When people answer chats, and how long a citizen may wait for one (济源 第十一条: missed calls
    at busy times are called back). Outside the hours, with nobody online or past the wait, a 回拨
    work order is filed instead."""

    hours: tuple[tuple[int, int], ...]  # (start, end) minutes after local midnight, every day
    max_wait_minutes: float
    expected_handle_minutes: float  # the expected wait before anyone was served today
    anger_words: tuple[str, ...]  # the citizen is angry: a person takes over (bot decides)

    def open_at(self, local_minutes: int) -> bool:
        return any(start <= local_minutes < end for start, end in self.hours)


_ALWAYS = HumanService(((0, 24 * 60),), 10.0, 4.0, ())


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    short_name: str
    document: str
    work_order_prefix: str
    adcodes: tuple[str, ...]
    region_display: str
    local_places: tuple[str, ...]
    categories: dict[str, Category]
    count_start_day: bool
    dispatch_hours: float
    required_facts: dict[str, tuple[str, ...]]
    urgent_rules: tuple[UrgentRule, ...]
    emergency_article: str
    emergency_services: tuple[EmergencyService, ...]
    emergency_past_markers: tuple[str, ...]
    screening: dict[str, ScreenRule]
    screening_min_confidence: float
    knowledge_base: Path | None
    survey: SurveyRules
    real_name: RealNamePolicy | None
    confidentiality_article: str
    confidentiality_keywords: tuple[str, ...]
    repeats: RepeatRules
    withdrawal: WithdrawalRules
    abuse: AbuseRules
    complex_limit_working_days: int | None
    complex_article: str | None
    retention: RetentionRules
    # What to do with a reply WeChat will not deliver (48-hour window): "sms" to the contact phone,
    # and/or "marker" (shown when the citizen next writes). Empty: keep it for an agent.
    undeliverable_fallback: tuple[str, ...] = ("marker",)
    human_service: HumanService = _ALWAYS
    extra: dict[str, Any] = field(default_factory=dict)

    def accepts(self, kind: str | None) -> bool:
        return kind in self.categories

    def facts_for(self, kind: str | None) -> tuple[str, ...]:
        return self.required_facts.get(kind or "", self.required_facts["default"])

    def screen_rule(self, kind: str) -> ScreenRule | None:
        return self.screening.get(kind)

    def urgent_rule(self, rule_id: str | None) -> UrgentRule | None:
        return next((r for r in self.urgent_rules if r.id == rule_id), None)

    def real_name_rule(self, rule_id: str | None) -> RealNameRule | None:
        if self.real_name is None:
            return None
        return next((r for r in self.real_name.rules if r.id == rule_id), None)


def _need(data: dict[str, Any], key: str, kind: type, path: Path, where: str = "") -> Any:
    full = f"{where}.{key}" if where else key
    if key not in data:
        raise ProfileError(path, full, "missing")
    value = data[key]
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        raise ProfileError(path, full, f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _str_list(data: dict[str, Any], key: str, path: Path, where: str = "") -> tuple[str, ...]:
    items = _need(data, key, list, path, where)
    if not all(isinstance(i, str) and i for i in items):
        raise ProfileError(path, f"{where}.{key}" if where else key, "expected a list of non-empty strings")
    return tuple(items)


def _opt_float(data: dict[str, Any], key: str, path: Path, where: str) -> float | None:
    if data.get(key) is None:
        return None
    value = _need(data, key, float, path, where)
    if value <= 0:
        raise ProfileError(path, f"{where}.{key}", "must be positive")
    return value


def parse_urgent(items: list[Any], path: Path) -> tuple[UrgentRule, ...]:
    rules = []
    for i, spec in enumerate(items):
        where = f"urgent[{i}]"
        if not isinstance(spec, dict):
            raise ProfileError(path, where, "expected a mapping")
        rule = UrgentRule(
            id=_need(spec, "id", str, path, where),
            label=_need(spec, "label", str, path, where),
            article=_need(spec, "article", str, path, where),
            keywords=_str_list(spec, "keywords", path, where),
            dispatch_hours=_opt_float(spec, "dispatch_hours", path, where),
            sign_minutes=_opt_float(spec, "sign_minutes", path, where),
            onsite_hours=_opt_float(spec, "onsite_hours", path, where),
            resolve_hours=_opt_float(spec, "resolve_hours", path, where),
            immediate=bool(spec.get("immediate", False)),
        )
        if not (rule.immediate or rule.dispatch_hours or rule.sign_minutes or rule.onsite_hours or rule.resolve_hours):
            raise ProfileError(path, where, "an urgent rule needs a limit (dispatch_hours, sign_minutes, onsite_hours, "
                               "resolve_hours) or immediate: true")
        rules.append(rule)
    return tuple(rules)


def parse_real_name(data: dict[str, Any] | None, path: Path) -> RealNamePolicy | None:
    if data is None:
        return None
    rules = []
    for i, spec in enumerate(_need(data, "rules", list, path, "real_name")):
        where = f"real_name.rules[{i}]"
        facts = _str_list(spec, "facts", path, where)
        unknown = [f for f in facts if f not in FACTS]
        if unknown:
            raise ProfileError(path, f"{where}.facts", f"unknown facts {unknown}; expected {FACTS}")
        rules.append(
            RealNameRule(
                _need(spec, "id", str, path, where), _need(spec, "label", str, path, where),
                _str_list(spec, "keywords", path, where), facts,
            )
        )
    return RealNamePolicy(
        _need(data, "article", str, path, "real_name"), tuple(rules),
        citizen_text(_need(data, "decline_message", str, path, "real_name")),
    )


def parse_survey(data: dict[str, Any], path: Path) -> SurveyRules:
    where = "survey"
    default = _need(data, "default_rating", str, path, where)
    if default not in RATINGS:
        raise ProfileError(path, f"{where}.default_rating", f"expected one of {RATINGS}")
    after = data.get("after_last_redo", "revisit")
    if after not in AFTER_LAST_REDO:
        raise ProfileError(path, f"{where}.after_last_redo", f"expected one of {AFTER_LAST_REDO}")
    quiet = data.get("quiet_hours", [21, 8])
    if quiet is not None and (
        not isinstance(quiet, list) or len(quiet) != 2 or not all(isinstance(h, int) and 0 <= h < 24 for h in quiet)
    ):
        raise ProfileError(path, f"{where}.quiet_hours", "expected [start_hour, end_hour] (0-23) or null")
    extra_days = data.get("redo_extra_working_days")
    if extra_days is not None and (not isinstance(extra_days, int) or extra_days < 0):
        raise ProfileError(path, f"{where}.redo_extra_working_days", "expected a non-negative integer or null")
    window = _need(data, "window_hours", float, path, where)
    if window <= 0:
        raise ProfileError(path, f"{where}.window_hours", "must be positive")
    scale = data.get("scale", 3)
    if scale not in (3, 5):
        raise ProfileError(path, f"{where}.scale", "expected 3 (满意/基本满意/不满意) or 5 (好差评, GB/T 39735-2020)")
    return SurveyRules(
        article=_need(data, "article", str, path, where),
        send_within_working_days=int(data.get("send_within_working_days", 1)),
        window_hours=window,
        default_rating=default,
        quiet_hours=tuple(quiet) if quiet is not None else None,  # type: ignore[arg-type]
        allow_correction=bool(data.get("allow_correction", True)),
        redo_extra_working_days=extra_days,
        max_redos=int(data.get("max_redos", 1)),
        after_last_redo=after,
        scale=scale,
    )


def parse_profile(path: Path) -> Profile:
    """Build a Profile from a YAML file, failing with the file, the key and what is wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProfileError(path, "(file)", f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(path, "(file)", "expected a mapping at the top level")

    categories: dict[str, Category] = {}
    for kind, spec in _need(data, "categories", dict, path).items():
        if kind not in REQUEST_KINDS:
            raise ProfileError(path, f"categories.{kind}", f"unknown kind; expected one of {REQUEST_KINDS}")
        if not isinstance(spec, dict):
            raise ProfileError(path, f"categories.{kind}", "expected a mapping")
        days = _need(spec, "limit_working_days", int, path, f"categories.{kind}")
        if days < 1:
            raise ProfileError(path, f"categories.{kind}.limit_working_days", "must be at least 1")
        categories[kind] = Category(kind, _need(spec, "label", str, path, f"categories.{kind}"), days)

    missing = [kind for kind in REQUEST_KINDS if kind not in categories]
    if missing:
        # No regulation lists a request kind (praise included) among 不予受理: every profile takes all six.
        raise ProfileError(path, "categories", f"missing kinds {missing}; map each to a label and a time limit")

    facts: dict[str, tuple[str, ...]] = {}
    for kind, _names in _need(data, "required_facts", dict, path).items():
        if kind != "default" and kind not in REQUEST_KINDS:
            raise ProfileError(path, f"required_facts.{kind}", "unknown kind")
        values = _str_list(data["required_facts"], kind, path, "required_facts")
        unknown = [n for n in values if n not in FACTS]
        if unknown:
            raise ProfileError(path, f"required_facts.{kind}", f"unknown facts {unknown}; expected {FACTS}")
        facts[kind] = values
    if "default" not in facts:
        raise ProfileError(path, "required_facts.default", "missing")

    screening: dict[str, ScreenRule] = {}
    for kind, spec in _need(data, "screening", dict, path).items():
        if kind not in SCREEN_KINDS:
            raise ProfileError(path, f"screening.{kind}", f"unknown kind; expected one of {SCREEN_KINDS}")
        where = f"screening.{kind}"
        screening[kind] = ScreenRule(
            kind, _need(spec, "article", str, path, where), citizen_text(_need(spec, "message", str, path, where))
        )

    region = _need(data, "region", dict, path)
    times = _need(data, "time_limits", dict, path)
    urgent = parse_urgent(_need(data, "urgent", list, path), path)
    confidentiality = _need(data, "confidentiality", dict, path)
    repeats = _need(data, "repeats", dict, path)
    similarity = _need(repeats, "similarity", float, path, "repeats")
    if not 0 < similarity <= 1:
        raise ProfileError(path, "repeats.similarity", "must be in (0, 1]")
    withdrawal = _need(data, "withdrawal", dict, path)
    retention = _need(data, "retention", dict, path)
    abuse = _need(data, "abuse", dict, path)
    complex_days = times.get("complex_limit_working_days")
    if complex_days is not None and (not isinstance(complex_days, int) or complex_days < 1):
        raise ProfileError(path, "time_limits.complex_limit_working_days", "expected a positive integer or null")
    emergency = _need(data, "emergency", dict, path)
    shared = shared_emergency_words()
    services = tuple(
        EmergencyService(
            str(_need(s, "number", str, path, "emergency.services")),
            _need(s, "name", str, path, "emergency.services"),
            _merge(_str_list(s, "keywords", path, "emergency.services"), shared.get(str(s.get("number")), ())),
        )
        for s in _need(emergency, "services", list, path, "emergency")
    )
    kb = data.get("knowledge_base")
    confidence = float(data.get("screening_min_confidence", 0.6))
    if not 0 < confidence <= 1:
        raise ProfileError(path, "screening_min_confidence", "must be in (0, 1]")

    return Profile(
        id=_need(data, "id", str, path),
        name=_need(data, "name", str, path),
        short_name=_need(data, "short_name", str, path),
        document=_need(data, "document", str, path),
        work_order_prefix=_need(data, "work_order_prefix", str, path),
        adcodes=_str_list(region, "adcodes", path, "region"),
        region_display=_need(region, "display", str, path, "region"),
        local_places=_str_list(region, "local_places", path, "region"),
        categories=categories,
        count_start_day=_need(times, "count_start_day", bool, path, "time_limits"),
        dispatch_hours=_need(times, "dispatch_hours", float, path, "time_limits"),
        required_facts=facts,
        urgent_rules=urgent,
        emergency_article=_need(emergency, "article", str, path, "emergency"),
        emergency_services=services,
        emergency_past_markers=_merge(tuple(emergency.get("past_markers", ())), shared.get("past_markers", ())),
        screening=screening,
        screening_min_confidence=confidence,
        knowledge_base=(path.parent / kb) if kb else None,
        survey=parse_survey(_need(data, "survey", dict, path), path),
        undeliverable_fallback=_fallback(data, path),
        human_service=parse_human_service(data.get("human_service") or {}, path),
        real_name=parse_real_name(data.get("real_name"), path),
        confidentiality_article=_need(confidentiality, "article", str, path, "confidentiality"),
        confidentiality_keywords=_str_list(confidentiality, "keywords", path, "confidentiality"),
        repeats=RepeatRules(
            _need(repeats, "article", str, path, "repeats"), similarity,
            _need(repeats, "escalate_after", int, path, "repeats"),
        ),
        withdrawal=WithdrawalRules(
            _need(withdrawal, "allowed", bool, path, "withdrawal"),
            _need(withdrawal, "article", str, path, "withdrawal"),
            _need(withdrawal, "supplement_restarts_clock", bool, path, "withdrawal"),
            _need(withdrawal, "supplement_article", str, path, "withdrawal"),
        ),
        abuse=AbuseRules(
            article=_need(abuse, "article", str, path, "abuse"),
            flood_messages=_need(abuse, "flood_messages", int, path, "abuse"),
            flood_window_s=_need(abuse, "flood_window_s", int, path, "abuse"),
            strikes=_need(abuse, "strikes", int, path, "abuse"),
            limit_hours=_need(abuse, "limit_hours", float, path, "abuse"),
            keywords=_str_list(abuse, "keywords", path, "abuse"),
            message=citizen_text(_need(abuse, "message", str, path, "abuse")),
        ),
        complex_limit_working_days=complex_days,
        complex_article=times.get("complex_article"),
        retention=RetentionRules(
            article=_need(retention, "article", str, path, "retention"),
            conversation_days=_need(retention, "conversation_days", int, path, "retention"),
            tracker_days=_need(retention, "tracker_days", int, path, "retention"),
            media_days=_need(retention, "media_days", int, path, "retention"),
        ),
    )


def _fallback(data: dict[str, Any], path: Path) -> tuple[str, ...]:
    values = tuple(data.get("undeliverable_fallback", ["marker"]) or ())
    bad = [v for v in values if v not in ("sms", "marker")]
    if bad:
        raise ProfileError(path, "undeliverable_fallback", f"unknown {bad}; expected sms and/or marker")
    return values


_SPAN = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


def parse_human_service(data: dict[str, Any], path: Path) -> HumanService:
    where = "human_service"
    hours = []
    for span in data.get("hours", ["00:00-24:00"]):
        m = _SPAN.match(str(span))
        start, end = (int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])) if m else (0, 0)
        if not m or not start < end <= 24 * 60:
            raise ProfileError(path, f"{where}.hours", f"{span!r}: expected HH:MM-HH:MM, start before end")
        hours.append((start, end))
    limits = [float(data.get(k, default)) for k, default in (("max_wait_minutes", 10), ("expected_handle_minutes", 4))]
    if min(limits) <= 0:
        raise ProfileError(path, where, "max_wait_minutes and expected_handle_minutes must be positive")
    own = _str_list(data, "anger_words", path, where) if "anger_words" in data else ()
    return HumanService(tuple(hours), limits[0], limits[1], _merge(own, shared_human_words()))


@cache
def shared_human_words() -> tuple[str, ...]:
    """How citizens say they are angry at the bot (common/): language, not a jurisdiction's rule."""
    data = yaml.safe_load((PROFILE_DIR / "common" / "anger_words.yml").read_text(encoding="utf-8"))
    return tuple(str(w) for w in data["anger_words"])


@cache
def shared_emergency_words() -> dict[str, tuple[str, ...]]:
    """Danger words by emergency number, and past markers, that every profile shares (common/)."""
    data = yaml.safe_load((PROFILE_DIR / "common" / "emergency_words.yml").read_text(encoding="utf-8"))
    return {str(key): tuple(str(w) for w in words) for key, words in data.items()}


def _merge(own: tuple[str, ...], shared: tuple[str, ...]) -> tuple[str, ...]:
    return own + tuple(w for w in shared if w not in own)


def available() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yml"))


@cache
def load(name: str | None = None) -> Profile:
    """Load a profile by name (default: $HOTLINE_PROFILE, else jiyuan)."""
    name = name or os.environ.get("HOTLINE_PROFILE") or DEFAULT_PROFILE
    path = PROFILE_DIR / f"{name}.yml"
    if not path.is_file():
        raise ProfileError(path, "(file)", f"no such profile; available: {', '.join(available())}")
    return parse_profile(path)
