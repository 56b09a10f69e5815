"""Decide whether the hotline may take a request, and if not, why and where to go instead.

One function, `screen`, is used by the live bot (action server) and by `hotline classify`, so the
evaluation command measures exactly what citizens get. The NLU model proposes; rules from the
profile back it where a miss is dangerous (emergencies) or where a library knows better than a
model (place names for jurisdiction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.facts import has_content, matched_keyword, normalize
from profiles import REQUEST_KINDS, EmergencyService, Profile, RealNameRule, UrgentRule

MODEL_SCREENED = ("legal_procedure", "outside_authority", "confidential", "civil_dispute", "no_substance")
# The two kinds the regulations list together (投诉举报, one time limit), which the model confuses most.
OWN_WORDS = {"complaint": "投诉", "report": "举报"}
_SAYING = ("我要", "我想", "想要", "特此", "实名")
# Below this the model's 'emergency' is not trusted without a keyword (a 12345 matter would be lost).
EMERGENCY_MIN_CONFIDENCE = 0.55
# A short message the model did not see as a request is a dialogue turn (你好, 好的), not a request.
MIN_REQUEST_CHARS = 8
# A confident dialogue intent (a bare phone number is `inform`) is a request only when it is long.
DIALOGUE_MAX_CHARS = 30
# Words after a place name that show it is a street, a shop or a person's origin, not a region.
_NOT_A_REGION_AFTER = ("路", "街", "大道", "巷", "胡同", "小区", "广场", "商城", "菜", "人", "话", "口音", "籍", "饭", "餐", "烩面")
_ADMIN_SUFFIXES = ("特别行政区", "自治区", "自治州", "自治县", "地区", "省", "市", "区", "县", "旗", "盟", "州")


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    category: str | None
    reason: str | None
    urgent: bool
    confidence: float
    article: str | None = None
    message: str | None = None
    service: EmergencyService | None = None
    place_found: str | None = None
    urgent_rule: UrgentRule | None = None

    def as_json(self, text: str) -> dict[str, Any]:
        return {
            "text": text,
            "accepted": self.accepted,
            "category": self.category,
            "reason": self.reason,
            "urgent": self.urgent,
            "confidence": round(self.confidence, 4),
        }


def emergency_service(text: str, profile: Profile) -> EmergencyService | None:
    """The emergency line a keyword points to, unless the text speaks of the past or of prevention."""
    text = normalize(text)
    if any(marker in text for marker in profile.emergency_past_markers):
        return None
    for service in profile.emergency_services:
        if any(word in text for word in service.keywords):
            return service
    return None


def emergency_message(profile: Profile, service: EmergencyService | None) -> str:
    if service is not None:
        return (
            f"情况紧急！请立即拨打{service.number}（{service.name}）求助。"
            f"12345是非紧急热线，无法派出现场救援。请先确保自身安全。"
        )
    numbers = "、".join(f"{s.number}（{s.name}）" for s in profile.emergency_services)
    return f"如遇紧急情况，请立即拨打{numbers}。12345是非紧急热线，无法派出现场救援。请先确保自身安全。"


def _region_names(*names: str | None) -> list[tuple[str, str]]:
    """Full and short forms of region names (河南省 → 河南), longest suffix first."""
    out = []
    for name in names:
        if not name or not isinstance(name, str) or "直辖" in name or name == "市辖区":
            continue
        short = name
        for suffix in _ADMIN_SUFFIXES:
            if name.endswith(suffix) and len(name) - len(suffix) >= 2:
                short = name[: -len(suffix)]
                break
        out.append((name, short))
    return out


def _mentioned_as_region(text: str, full: str, short: str) -> bool:
    if full in text:
        return True
    start = text.find(short)
    while start >= 0:
        after = text[start + len(short) : start + len(short) + 2]
        if not after.startswith(_NOT_A_REGION_AFTER):
            return True
        start = text.find(short, start + 1)
    return False


def outside_place(text: str, profile: Profile) -> str | None:
    """The region named in the text when it lies outside the profile's jurisdiction, else None."""
    import cpca

    text = normalize(text)
    if any(name in text for name in profile.local_places):
        return None  # a local place is named: the matter is ours even if another city is mentioned
    row = cpca.transform([text]).iloc[0]
    adcode = row.get("adcode")
    if not isinstance(adcode, str) or not adcode:
        return None
    names = _region_names(row.get("区"), row.get("市"), row.get("省"))
    mentioned = [full for full, short in names if _mentioned_as_region(text, full, short)]
    if not mentioned:
        return None
    prefix = adcode.rstrip("0")
    for code in profile.adcodes:
        if adcode.startswith(code) or code.startswith(prefix):
            return None  # inside, or a parent region (河南省) that includes the jurisdiction
    return "".join(reversed(mentioned))  # 郑州市金水区: from the largest region down


def _ranking(nlu: dict[str, Any]) -> list[tuple[str, float]]:
    ranking = nlu.get("intent_ranking") or ([nlu["intent"]] if nlu.get("intent") else [])
    return [(r["name"], float(r.get("confidence") or 0.0)) for r in ranking if r.get("name") != "nlu_fallback"]


def _screened(
    kind: str, confidence: float, profile: Profile, urgent: UrgentRule | None, place: str | None = None
) -> Verdict:
    rule = profile.screen_rule(kind)
    return Verdict(
        accepted=False,
        category=None,
        reason=kind,
        urgent=urgent is not None,
        confidence=confidence,
        article=rule.article if rule else None,
        message=rule.message if rule else None,
        place_found=place,
        urgent_rule=urgent,
    )


def urgent_rule(text: str, profile: Profile) -> UrgentRule | None:
    """The profile's urgent rule the request falls under (停水停电, 灾害, 弱势群体…), if any."""
    return next((r for r in profile.urgent_rules if matched_keyword(text, r.keywords)), None)


def is_urgent(text: str, profile: Profile) -> bool:
    return urgent_rule(text, profile) is not None


def real_name_rule(text: str, profile: Profile) -> RealNameRule | None:
    """A request the profile takes only with name, ID number and phone (桂林 第十二条), if any."""
    if profile.real_name is None:
        return None
    return next((r for r in profile.real_name.rules if matched_keyword(text, r.keywords)), None)


def wants_confidentiality(text: str, profile: Profile) -> bool:
    """诉求人要求保密: recorded on the work order so the handling unit never reveals the citizen."""
    return matched_keyword(text, profile.confidentiality_keywords) is not None


def said_kind(clean: str) -> str | None:
    """The kind the citizen named themselves (投诉…, 我要举报…), when they named one and never the other."""
    said = {kind for kind, word in OWN_WORDS.items()
            if clean.startswith(word) or any(lead + word in clean for lead in _SAYING)}
    mentioned = {kind for kind, word in OWN_WORDS.items() if word in clean}
    return said.pop() if len(said) == 1 and mentioned == said else None


def screen(text: str, nlu: dict[str, Any], profile: Profile) -> Verdict:
    """Screen one citizen message given the NLU result (`/model/parse` or the tracker's latest message)."""
    clean = normalize(text)
    urgent = urgent_rule(clean, profile)
    ranking = _ranking(nlu)
    top, top_conf = ranking[0] if ranking else (None, 0.0)

    if not has_content(clean):
        return _screened("no_substance", 1.0, profile, None)

    service = emergency_service(clean, profile)
    if service is not None or (top == "emergency" and top_conf >= EMERGENCY_MIN_CONFIDENCE):
        return Verdict(
            accepted=False,
            category=None,
            reason="emergency",
            urgent=True,
            confidence=1.0 if service else top_conf,
            article=profile.emergency_article,
            message=emergency_message(profile, service),
            service=service,
        )

    if top in MODEL_SCREENED and top_conf >= profile.screening_min_confidence and profile.screen_rule(top):
        return _screened(top, top_conf, profile, urgent)

    place = outside_place(clean, profile)
    if place is not None:
        return _screened("out_of_jurisdiction", 1.0, profile, urgent, place)

    kinds = [(name, conf) for name, conf in ranking if name in REQUEST_KINDS]
    dialogue_turn = top not in REQUEST_KINDS and top not in MODEL_SCREENED and top_conf >= 0.5
    if top not in REQUEST_KINDS and (
        len(clean) < MIN_REQUEST_CHARS or not kinds or (dialogue_turn and len(clean) < DIALOGUE_MAX_CHARS)
    ):
        # A dialogue turn (你好, 好的) or an unsure screened guess on a short text: not a request.
        return Verdict(False, None, None, urgent is not None, top_conf, urgent_rule=urgent)
    category, confidence = kinds[0]
    said = said_kind(clean) if category in OWN_WORDS else None
    if said is not None and profile.accepts(said):
        category = said  # "我要投诉…" is not answered with "您的诉求属于举报类"
    return Verdict(profile.accepts(category), category, None, urgent is not None, confidence, urgent_rule=urgent)
