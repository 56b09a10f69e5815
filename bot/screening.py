"""Decide whether the hotline may take a request, and if not, why and where to go instead.

One function, `screen`, is used by the live bot (action server) and by `hotline classify`, so the
evaluation command measures exactly what citizens get. The NLU model proposes; rules from the
profile back it where a miss is dangerous (emergencies) or where a library knows better than a
model (place names for jurisdiction).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.facts import has_content, matched_keyword, normalize
from profiles import REQUEST_KINDS, EmergencyService, Profile, RealNameRule, UrgentRule

MODEL_SCREENED = ("legal_procedure", "outside_authority", "confidential", "civil_dispute", "no_substance")
# The two kinds the regulations list together (投诉举报, one time limit), which the model confuses most.
# The word a citizen uses to name their request. When they name exactly one kind, it decides (我要投诉…
# is not answered with 举报, 举报…不交社保 not with 咨询); a message naming two is left to the model.
OWN_WORDS = {"complaint": "投诉", "report": "举报", "suggestion": "建议", "consult": "咨询", "praise": "表扬", "help": "求助"}
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
    # A short question the bot asks with its first reply (is the danger happening now?).
    ask: str | None = None
    # Why an accepted request is flagged for the dispatcher: a screening rule nearly applied.
    doubt: str | None = None

    def as_json(self, text: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": text,
            "accepted": self.accepted,
            "category": self.category,
            "reason": self.reason,
            "urgent": self.urgent,
            "confidence": round(self.confidence, 4),
        }
        if self.ask is not None:
            out["ask"] = self.ask
        if self.doubt is not None:
            out["doubt"] = self.doubt
        return out


# Words that say the danger is happening now; a letter that only names a danger (交通事故, 火灾) is
# about something past, feared or planned, which is a 12345 matter.
NOW_MARKERS = (
    "正在", "刚才", "刚刚", "此刻", "马上", "赶紧", "赶快", "快来", "快点", "快派", "快叫", "救命", "救救",
    "还没出来", "急死", "求救", "十万火急", "分钟前", "钟头前", "小时前", "还有人在", "人还在", "还没撤",
)
# Words of the present that letters also use for long-standing problems (现在还没有房产证): enough
# only in a short message.
NOW_IN_CHAT = ("现在", "还在", "紧急", "怎么办", "刚")
# Danger words inside everyday phrases: 打不着火 is a stove that will not light.
NOT_DANGER = ("打不着火", "点不着火", "不着火", "着火点", "防火", "消防栓", "正在打造", "正在打算", "正在打听")
# A danger word used as a hazard (火灾隐患) or a what-if (一旦发生火灾, 万一着火) names no present danger.
HAZARD_AFTER = ("隐患", "安全隐患", "风险", "的风险", "多发", "事故多发", "频发")
HYPOTHETICAL_BEFORE = ("一旦", "万一", "如果", "假如", "若", "以防", "防止", "预防", "避免", "谨防", "容易")
# A year written in full (2019.3.18, 2019年) dates the matter in the past.
_YEAR = re.compile(r"(19|20)\d\d(年|\.\d|-\d|/\d)")
# In a letter only its opening (the title and first lines) can report a danger happening now; later
# lines tell a story.
LETTER_HEAD_CHARS = 150

# How close a word of the present must stand to a danger word in a letter.
NEAR_CHARS = 20
# A message this long reads as a letter: an emergency needs a word of the present, not a topic.
LETTER_CHARS = 120
# Model-only emergencies at or above this are referred without asking whether it is happening now.
EMERGENCY_SURE = 0.8


def is_now(text: str) -> bool:
    markers = NOW_MARKERS if len(text) >= LETTER_CHARS else NOW_MARKERS + NOW_IN_CHAT
    return any(marker in text for marker in markers)


def is_past(text: str, profile: Profile) -> bool:
    return any(marker in text for marker in profile.emergency_past_markers) or _YEAR.search(text) is not None


def keyword_service(text: str, profile: Profile, *, near_now: bool = False) -> EmergencyService | None:
    """The emergency line a danger word points to (火灾 → 119). `near_now`: only a word with a word of
    the present close by counts, as a letter must show (刚才…着火了, not 一旦发生火灾…正在施工)."""
    for phrase in NOT_DANGER:
        text = text.replace(phrase, "，")
    for service in profile.emergency_services:
        for word in service.keywords:
            for start in _mentions(text, word):
                end = start + len(word)
                hypothetical = text[end : end + 4].startswith(HAZARD_AFTER) or any(
                    w in text[max(0, start - 6) : start] for w in HYPOTHETICAL_BEFORE
                )
                window = text[max(0, start - NEAR_CHARS) : end + NEAR_CHARS]
                if not hypothetical and (not near_now or any(marker in window for marker in NOW_MARKERS)):
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


def _region_names(levels: list[tuple[object, str]]) -> list[tuple[str, str, str]]:
    """(full, short, level) of each region cpca found (河南省 → 河南), skipping placeholders."""
    out = []
    for name, level in levels:
        if not _usable(name):
            continue
        full = short = str(name)
        for suffix in _ADMIN_SUFFIXES:
            if full.endswith(suffix) and len(full) - len(suffix) >= 2:
                short = full[: -len(suffix)]
                break
        out.append((full, short, level))
    return out


# Words for parts of any city: 老城区 or 开发区 places a matter nowhere in particular.
GENERIC_AREAS = (
    "经济技术开发区", "经济开发区", "高新技术开发区", "产业集聚区", "老城区", "新城区", "主城区", "高新区", "开发区",
    "示范区", "市区", "城区", "新区", "郊区", "县城",
)
# Around a region name, these say it is where the citizen works or comes from, not where the matter is.
_INCIDENTAL_AFTER = (
    "工作", "上班", "打工", "务工", "读书", "上学", "出差", "住院", "看病", "就医", "治病", "旅游", "人", "籍", "总部",
    "口音", "户口", "调", "来的", "回来",
)
# ... or where someone travels to (拉客去郑州, 开往洛阳的班车): the matter is where it happens here.
_INCIDENTAL_BEFORE = ("来自", "老家", "从", "籍", "总部在", "户口在", "在外地", "调到", "回", "去", "到", "往", "开往", "发往")


def _mentions(text: str, name: str) -> list[int]:
    out, start = [], text.find(name)
    while start >= 0:
        out.append(start)
        start = text.find(name, start + 1)
    return out


def _matter_mention(text: str, full: str, short: str, level: str) -> bool:
    """Is the region named as the place of the matter? A county or district counts only by its full
    name (桐梓县, not a street called 桐梓); any name counts only when it is not incidental."""
    forms = [full] if level == "区" or short == full else [full, short]
    for form in forms:
        for start in _mentions(text, form):
            end = start + len(form)
            after, before = text[end : end + 3], text[max(0, start - 4) : start]
            if form == short and after.startswith(_NOT_A_REGION_AFTER):
                continue
            if any(after.startswith(w) for w in _INCIDENTAL_AFTER) or any(w in before for w in _INCIDENTAL_BEFORE):
                continue
            return True
    return False


def outside_place(text: str, profile: Profile) -> str | None:
    """The region named in the text when it lies outside the profile's jurisdiction, else None.

    Only a clear naming of another region refuses: generic words (老城区, 开发区), unknown street
    names and incidental mentions (where the citizen works or comes from) never do; the intake form
    then asks where the matter is.
    """
    import cpca

    text = normalize(text)
    if any(name in text for name in profile.local_places):
        return None  # a local place is named: the matter is ours even if another city is mentioned
    for word in GENERIC_AREAS:
        text = text.replace(word, "，")
    row = cpca.transform([text]).iloc[0]
    adcode = row.get("adcode")
    if not isinstance(adcode, str) or not adcode:
        return None
    levels = [(row.get("区"), "区"), (row.get("市"), "市"), (row.get("省"), "省")]
    named = [(full, level) for full, short, level in _region_names(levels) if _matter_mention(text, full, short, level)]
    if not named:
        return None
    mentioned = [full for full, _ in named]
    # Judge by the most specific region named as the matter's place: 周口籍 … 河南省 is 河南省.
    prefix = adcode[: _CODE_DIGITS[named[0][1]]].rstrip("0")
    for code in profile.adcodes:
        if adcode.startswith(code) or code.startswith(prefix):
            return None  # inside, or a parent region (河南省) that includes the jurisdiction
    return "".join(reversed(mentioned))  # 郑州市金水区: from the largest region down


_CODE_DIGITS = {"区": 6, "市": 4, "省": 2}


def _usable(name: object) -> bool:
    return bool(name) and isinstance(name, str) and "直辖" not in name and name != "市辖区"


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
    """The kind the citizen named themselves (投诉…, 我要举报…), when they named one and no other."""
    said = {kind for kind, word in OWN_WORDS.items()
            if clean.startswith(word) or any(lead + word in clean for lead in _SAYING)}
    mentioned = {kind for kind, word in OWN_WORDS.items() if word in clean}
    return said.pop() if len(said) == 1 and mentioned == said else None


# A screening rule refuses only on clear evidence: the model's confident word AND one of these in the
# text. Without them the request is accepted and flagged for the dispatcher (a wrongful refusal is
# the worst error after a missed emergency).
EVIDENCE: dict[str, tuple[str, ...]] = {
    "legal_procedure": (
        "起诉", "诉讼", "仲裁", "复议", "信访", "上访", "判决", "裁定", "立案", "开庭", "一审", "二审", "再审",
        "申诉", "打官司", "官司", "庭审", "审理", "法院", "公开申请", "信息公开",
    ),
    "outside_authority": (
        "法院", "法官", "执行局", "检察", "纪委", "监委", "纪检", "监察委", "人大", "政协", "部队", "军队", "军人",
        "当兵", "武装部", "征兵", "兵役", "军区", "靶场", "贪污", "受贿", "收红包", "索贿", "腐败", "违纪",
    ),
    "confidential": (
        "他的", "她的", "别人", "他人", "某人", "对方", "邻居", "前妻", "前夫", "前女友", "前男友", "老公", "老婆",
        "同事", "机主", "所有业主", "秘密", "机密", "涉密", "内部文件", "红头文件", "试题", "考题", "真实身份", "底细",
        "行踪", "定位", "开房", "住哪", "住址", "家庭住址", "监控录像", "工资条", "打分表",
    ),
    "civil_dispute": (
        "借", "欠我", "欠款", "还钱", "离婚", "继承", "遗产", "遗嘱", "分家", "抚养费", "彩礼", "合伙", "房东", "租客",
        "押金", "赡养", "担保", "欠条", "借条", "前夫", "前妻", "我哥", "我姐", "我弟", "我妹", "兄弟", "探视",
    ),
}
# A letter is refused by a screening rule only when the model is this sure as well.
LETTER_SCREENING_CONFIDENCE = 0.75
# Words that ask something of the government: a message with one has substance, however short.
REQUEST_MARKERS = ("请问", "咨询", "投诉", "举报", "建议", "反映", "何时", "什么时候", "怎么办理", "如何", "为什么", "能不能", "是否")
# Abuse, tests and chit-chat are short; a long message has something to say even when it is angry.
NO_SUBSTANCE_MAX_CHARS = 40
# Praise needs a word of praise: "尊敬的领导" alone opens complaints as often as thanks.
PRAISE_WORDS = ("表扬", "点赞", "称赞", "赞扬", "锦旗", "致谢", "感谢信", "好样的", "为民办实事", "感恩", "态度真好", "服务真好")
# Thanks in the closing lines of a letter is politeness (万分感谢); in its opening it is the matter.
THANKS_WORDS = ("感谢", "谢谢", "感激", "辛苦了")


def _praises(clean: str) -> bool:
    opening = clean[: max(40, len(clean) * 2 // 5)]
    return any(w in clean for w in PRAISE_WORDS) or any(w in opening for w in THANKS_WORDS)


def _clear_refusal(kind: str, clean: str) -> bool:
    if kind == "no_substance":
        return len(clean) < NO_SUBSTANCE_MAX_CHARS and not any(m in clean for m in REQUEST_MARKERS)
    return any(word in clean for word in EVIDENCE.get(kind, ()))


NOW_QUESTION = "请问现在是否正在发生、有人身危险吗？如果是过去的事情，请回复“不是”，我们继续为您登记。"


def emergency_verdict(text: str, nlu: dict[str, Any], profile: Profile) -> Verdict | None:
    """The referral for a message that reports a present danger, else None: the same judgment for a
    first message and for an answer in the middle of a form."""
    ranking = _ranking(nlu)
    top, top_conf = ranking[0] if ranking else (None, 0.0)
    return _emergency(normalize(text), top, top_conf, profile)


def _emergency(clean: str, top: str | None, top_conf: float, profile: Profile) -> Verdict | None:
    """Refer a present danger at once; ask when the bot cannot tell whether it is happening now."""
    letter = len(clean) >= LETTER_CHARS
    now = is_now(clean)
    if is_past(clean, profile) and not now:
        return None  # 去年着火, 每天都有人打架: a past or habitual matter, even in the model's eyes
    if letter and not now:
        return None  # a letter naming a danger (交通事故, 火灾) without a word of the present
    service = keyword_service(clean[:LETTER_HEAD_CHARS] if letter else clean, profile, near_now=letter)
    model_says = top == "emergency" and top_conf >= (EMERGENCY_SURE if letter else EMERGENCY_MIN_CONFIDENCE)
    if service is None and not model_says:
        return None
    sure = now or (service is not None and model_says) or (model_says and top_conf >= EMERGENCY_SURE)
    return Verdict(
        accepted=False,
        category=None,
        reason="emergency",
        urgent=True,
        confidence=1.0 if service and now else max(top_conf, 0.5),
        article=profile.emergency_article,
        message=emergency_message(profile, service),
        service=service,
        ask=None if sure else NOW_QUESTION,
    )


def _best_kind(ranking: list[tuple[str, float]], clean: str) -> tuple[str, float] | None:
    kinds = [(name, conf) for name, conf in ranking if name in REQUEST_KINDS]
    if kinds and kinds[0][0] == "praise" and not _praises(clean):
        kinds = kinds[1:] + kinds[:1]  # praise without a word of praise: the next kind
    return kinds[0] if kinds else None


def best_request_kind(text: str, nlu: dict[str, Any]) -> str | None:
    """The request kind the model ranks best for the text, kept while the bot asks about a danger."""
    best = _best_kind(_ranking(nlu), normalize(text))
    return best[0] if best else None


def screen(text: str, nlu: dict[str, Any], profile: Profile, *, danger_denied: bool = False) -> Verdict:
    """Screen one citizen message given the NLU result (`/model/parse` or the tracker's latest message).

    `danger_denied`: the citizen said the danger the bot asked about is not happening now."""
    clean = normalize(text)
    urgent = urgent_rule(clean, profile)
    ranking = _ranking(nlu)
    top, top_conf = ranking[0] if ranking else (None, 0.0)

    if not has_content(clean):
        return _screened("no_substance", 1.0, profile, None)

    emergency = None if danger_denied else _emergency(clean, top, top_conf, profile)
    if emergency is not None:
        return emergency

    doubt = None
    if top in MODEL_SCREENED and profile.screen_rule(top):
        floor = profile.screening_min_confidence
        if len(clean) >= LETTER_CHARS:
            floor = max(floor, LETTER_SCREENING_CONFIDENCE)  # a letter mentions courts and lawyers in passing
        if top_conf >= floor and _clear_refusal(top, clean):
            return _screened(top, top_conf, profile, urgent)
        doubt = top  # the model leaned to a refusal without clear evidence: a person decides

    place = outside_place(clean, profile)
    if place is not None:
        return _screened("out_of_jurisdiction", 1.0, profile, urgent, place)

    best = _best_kind(ranking, clean)
    dialogue_turn = top not in REQUEST_KINDS and top not in MODEL_SCREENED and top_conf >= 0.5
    short = len(clean) < DIALOGUE_MAX_CHARS
    if top not in REQUEST_KINDS and doubt is None and (
        len(clean) < MIN_REQUEST_CHARS or (short and (best is None or dialogue_turn))
    ):
        # A dialogue turn (你好, 好的): not a request. A longer message always is one.
        return Verdict(False, None, None, urgent is not None, top_conf, urgent_rule=urgent)
    category, confidence = best if best is not None else ("consult", 0.0)
    said = said_kind(clean)
    if said is not None and profile.accepts(said):
        category = said  # "我要投诉…" is not answered with "您的诉求属于举报类"
    return Verdict(profile.accepts(category), category, None, urgent is not None, confidence, urgent_rule=urgent, doubt=doubt)
