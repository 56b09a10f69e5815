"""Jurisdiction profiles: each regulation's rules as data, loaded and checked once at start.

Pure standard library + PyYAML so that the gateway (current Python) and the bot's action server
(Python 3.10 with Rasa's pins) load exactly the same rules.
"""

from __future__ import annotations

import os
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
FACTS = ("content", "event_time", "place", "phone")
RATINGS = ("very_satisfied", "satisfied", "basically_satisfied", "unsatisfied", "very_unsatisfied")
AFTER_LAST_REDO = ("expert_review", "revisit", "close")


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

    def is_quiet(self, hour: int) -> bool:
        if self.quiet_hours is None:
            return False
        start, end = self.quiet_hours
        return start <= hour or hour < end if start > end else start <= hour < end


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
    name_policy: str
    urgent_keywords: tuple[str, ...]
    urgent_dispatch_hours: float
    urgent_article: str
    emergency_article: str
    emergency_services: tuple[EmergencyService, ...]
    emergency_past_markers: tuple[str, ...]
    screening: dict[str, ScreenRule]
    screening_min_confidence: float
    knowledge_base: Path | None
    survey: SurveyRules
    # What to do with a reply WeChat will not deliver (48-hour window): "sms" to the contact phone,
    # and/or "marker" (shown when the citizen next writes). Empty: keep it for an agent.
    undeliverable_fallback: tuple[str, ...] = ("marker",)
    extra: dict[str, Any] = field(default_factory=dict)

    def accepts(self, kind: str | None) -> bool:
        return kind in self.categories

    def facts_for(self, kind: str | None) -> tuple[str, ...]:
        return self.required_facts.get(kind or "", self.required_facts["default"])

    def screen_rule(self, kind: str) -> ScreenRule | None:
        return self.screening.get(kind)


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
            kind, _need(spec, "article", str, path, where), _need(spec, "message", str, path, where).strip()
        )

    region = _need(data, "region", dict, path)
    times = _need(data, "time_limits", dict, path)
    urgent = _need(data, "urgent", dict, path)
    emergency = _need(data, "emergency", dict, path)
    services = tuple(
        EmergencyService(
            str(_need(s, "number", str, path, "emergency.services")),
            _need(s, "name", str, path, "emergency.services"),
            _str_list(s, "keywords", path, "emergency.services"),
        )
        for s in _need(emergency, "services", list, path, "emergency")
    )
    kb = data.get("knowledge_base")
    name_policy = data.get("name_policy", "optional")
    if name_policy not in ("optional", "required"):
        raise ProfileError(path, "name_policy", "expected 'optional' or 'required'")
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
        name_policy=name_policy,
        urgent_keywords=_str_list(urgent, "keywords", path, "urgent"),
        urgent_dispatch_hours=_need(urgent, "dispatch_hours", float, path, "urgent"),
        urgent_article=_need(urgent, "article", str, path, "urgent"),
        emergency_article=_need(emergency, "article", str, path, "emergency"),
        emergency_services=services,
        emergency_past_markers=tuple(emergency.get("past_markers", ())),
        screening=screening,
        screening_min_confidence=confidence,
        knowledge_base=(path.parent / kb) if kb else None,
        survey=parse_survey(_need(data, "survey", dict, path), path),
        undeliverable_fallback=_fallback(data, path),
    )


def _fallback(data: dict[str, Any], path: Path) -> tuple[str, ...]:
    values = tuple(data.get("undeliverable_fallback", ["marker"]) or ())
    bad = [v for v in values if v not in ("sms", "marker")]
    if bad:
        raise ProfileError(path, "undeliverable_fallback", f"unknown {bad}; expected sms and/or marker")
    return values


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
