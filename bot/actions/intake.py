"""The intake dialogue: screen the first message, collect the missing facts, confirm, hand off.

The bot never writes to the gateway's database. It ends an intake by sending a custom payload
(`{"intake": {...}}`, `{"screened": {...}}`, `{"handoff": "agent"}`) that the gateway acts on.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from abc import abstractmethod
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from bot import facts, knowledge
from bot.screening import (
    Verdict,
    best_request_kind,
    emergency_message,
    emergency_verdict,
    is_past,
    keyword_service,
    outside_place,
    real_name_rule,
    screen,
    wants_confidentiality,
)
from common.payloads import IntakeFields, ScreenedFields, WithdrawFields
from profiles import Profile, load

log = logging.getLogger(__name__)

FACT_SLOTS = ("content", "event_time", "place", "phone", "name", "id_number")
INTAKE_SLOTS = (
    *FACT_SLOTS, "category", "urgent", "urgent_rule", "real_name_rule", "real_name_required", "confidential", "intake_id", "anonymous",
    "confirmation", "correct_field", "supplement_number", "supplement_text", "screening_doubt", "pending_request",
    "pending_kind",
)
FIELD_LABELS = {
    "content": "诉求内容", "event_time": "发生时间", "place": "地点", "phone": "联系电话", "name": "称呼",
    "id_number": "身份证号码",
}
# Words a citizen uses for each fact when asking to change it.
FIELD_WORDS = {
    "place": ("地址", "地点", "位置", "地方", "路口", "小区"),
    "event_time": ("时间", "日期", "几点", "哪天"),
    "phone": ("电话", "手机", "号码", "联系方式"),
    "id_number": ("身份证",),
    "name": ("名字", "姓名", "称呼", "匿名"),
    "content": ("内容", "情况", "描述", "问题", "事情"),
}
MIN_CONTENT_CHARS = 8
# The start of utter_prompt_request, for trackers whose bot events carry no utter_action.
PROMPT_START = "请直接描述您要反映的事项"
# Messages that are conversation, never a request, however often the bot has asked.
SMALL_TALK = ("greet", "goodbye", "thanks", "affirm", "deny", "cancel", "request_human")
# Yes, no and corrections with no intake under way: the citizen is asked for the request itself.
STRAY_INTENTS = ("affirm", "deny", "correct", "anonymous")
YES_WORDS = ("确认", "提交", "没问题", "对的", "正确", "是的", "可以", "好的", "没错", "嗯")


def profile_for(tracker: Tracker) -> Profile:
    """The gateway names the jurisdiction in each message's metadata; the environment is the fallback."""
    metadata = tracker.latest_message.get("metadata") or {}
    return load(metadata.get("profile") if isinstance(metadata, dict) else None)


def prompted_before(tracker: Tracker) -> bool:
    """Was the bot's last message before this one the prompt to describe the request?"""
    seen_user = False
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            if seen_user:
                return False
            seen_user = True
        elif event.get("event") == "bot" and seen_user:
            action = (event.get("metadata") or {}).get("utter_action")
            return action == "utter_prompt_request" or str(event.get("text") or "").startswith(PROMPT_START)
    return False


def channel_of(tracker: Tracker) -> str | None:
    metadata = tracker.latest_message.get("metadata") or {}
    return metadata.get("channel") if isinstance(metadata, dict) else None


def needed_facts(profile: Profile, tracker: Tracker) -> list[str]:
    """The facts this kind of request needs under the profile; on SMS the sender's number is the contact
    (the gateway records it), so it is never asked."""
    needed = set(profile.facts_for(tracker.get_slot("category"))) | {"name"}
    rule = profile.real_name_rule(tracker.get_slot("real_name_rule"))
    if rule is not None:
        needed |= set(rule.facts)
    if channel_of(tracker) == "sms":
        needed.discard("phone")
    return [slot for slot in FACT_SLOTS if slot in needed]


def fresh_intake(tracker: Tracker, values: dict[str, Any] | None = None) -> list[EventType]:
    """The events that leave every intake slot empty but `values`: a SlotSet only for a slot that
    changes. Rasa validates and stores every event an action returns (each SlotSet against its whole
    event schema), so a first message that cleared all the intake slots cost more than its NLU."""
    wanted = dict.fromkeys(INTAKE_SLOTS) | (values or {})
    return [SlotSet(slot, value) for slot, value in wanted.items() if tracker.get_slot(slot) != value]


def reset_intake(tracker: Tracker) -> list[EventType]:
    return fresh_intake(tracker)


def utter_referral(dispatcher: CollectingDispatcher, verdict: Verdict) -> None:
    """The emergency number at once, and the question when the bot cannot tell whether it is now."""
    payload = screened_payload(verdict)
    if verdict.ask is None:
        dispatcher.utter_message(text=verdict.message, json_message=payload)
    else:
        dispatcher.utter_message(text=f"{verdict.message}\n{verdict.ask}", json_message={**payload, "ask": verdict.ask})


def screened_payload(verdict: Verdict) -> dict[str, Any]:
    screened: ScreenedFields = {"reason": verdict.reason or "", "article": verdict.article, "confidence": verdict.confidence}
    return {"screened": screened}


class ActionStartIntake(Action):
    """First message of a request: screen it, answer from the knowledge base, or start the form."""

    def name(self) -> str:
        return "action_start_intake"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        profile = profile_for(tracker)
        text = tracker.latest_message.get("text") or ""
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        pending = tracker.get_slot("pending_request")
        if pending:
            clear: list[EventType] = [SlotSet("pending_request", None), SlotSet("pending_kind", None)]
            if intent == "affirm":  # yes, it is happening now: the number again, nothing else
                service = keyword_service(facts.normalize(pending), profile)
                utter_referral(dispatcher, Verdict(
                    False, None, "emergency", True, 1.0, article=profile.emergency_article,
                    message=emergency_message(profile, service), service=service,
                ))
                return clear
            if intent == "deny" or is_past(facts.normalize(text), profile):
                # Not happening now: the first message is the request; this reply adds to it.
                ranking = {"intent_ranking": [{"name": tracker.get_slot("pending_kind") or "help", "confidence": 1.0}]}
                combined = pending if intent == "deny" and len(text) < 12 else f"{pending}；{text}"
                verdict = screen(combined, ranking, profile, danger_denied=True)
                return [*clear, *await self.start(dispatcher, tracker, domain, profile, combined, verdict)]
            events = clear
        else:
            events = []
        if intent in STRAY_INTENTS:
            dispatcher.utter_message(response="utter_prompt_request")
            return events
        verdict = screen(text, tracker.latest_message, profile)
        if verdict.ask is not None:
            utter_referral(dispatcher, verdict)
            kind = best_request_kind(text, tracker.latest_message)
            return [*events, SlotSet("pending_request", facts.normalize(text)[:2000]), SlotSet("pending_kind", kind)]
        return [*events, *await self.start(dispatcher, tracker, domain, profile, text, verdict)]

    async def start(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict, profile: Profile, text: str,
        verdict: Verdict,
    ) -> list[EventType]:
        """Refer, answer from the knowledge base, or open the intake form for a screened message."""
        if verdict.reason is not None:
            message = verdict.message or "抱歉，该事项不属于12345热线受理范围。"
            dispatcher.utter_message(text=message, json_message=screened_payload(verdict))
            return reset_intake(tracker)
        if verdict.category is None:
            intent = (tracker.latest_message.get("intent") or {}).get("name")
            kind = best_request_kind(text, tracker.latest_message)
            if not (prompted_before(tracker) and kind and intent not in SMALL_TALK and len(facts.normalize(text)) >= 4):
                dispatcher.utter_message(response="utter_prompt_request")
                return []
            # Asked once already and answered with something: that is the request (never ask twice).
            verdict = dataclasses.replace(verdict, accepted=True, category=kind, doubt="kind")
        if verdict.category == "consult":
            hit = knowledge.best_answer(text, profile.knowledge_base)
            if hit is not None:
                entry, score = hit
                dispatcher.utter_message(
                    text=f"{entry.answer}\n\n如果这没有解决您的问题，请继续描述具体情况，我们会为您登记转办。",
                    json_message={"answered": {"kb": entry.id, "score": round(score, 3)}},
                )
                return reset_intake(tracker)

        identity = real_name_rule(text, profile)
        when = facts.extract_time(text)
        values: dict[str, Any] = {
            "category": verdict.category,
            "urgent": verdict.urgent,
            "urgent_rule": verdict.urgent_rule.id if verdict.urgent_rule else None,
            "real_name_rule": identity.id if identity else None,
            "real_name_required": identity is not None and "name" in identity.facts,
            "confidential": wants_confidentiality(text, profile),
            "intake_id": uuid.uuid4().hex,
            "anonymous": False,
            "screening_doubt": verdict.doubt,
            "content": facts.normalize(text)[:2000] if len(facts.normalize(text)) >= MIN_CONTENT_CHARS else None,
            "event_time": when.display() if when is not None else None,
            "place": facts.extract_place(text, profile),
            "phone": facts.extract_phone(text),
        }
        events = fresh_intake(tracker, values)
        label = profile.categories[verdict.category].label
        lines = [f"好的，您的诉求属于“{label}”类。"]
        if verdict.urgent_rule is not None:
            lines.append(verdict.urgent_rule.citizen_note())
        if identity is not None and profile.real_name is not None:
            needed = "、".join(FIELD_LABELS[f] for f in identity.facts)
            lines.append(
                f"根据{profile.short_name}的规定（{profile.real_name.article}），{identity.label}需要提供{needed}，"
                "您的信息将严格保密。"
            )
        if channel_of(tracker) != "sms":  # on SMS every character is paid for: the questions say it
            lines.append("为了尽快为您办理，还需要确认几项信息。")
        dispatcher.utter_message(text="".join(lines))
        return [*events, *await open_intake_form(dispatcher, tracker, events, profile, domain)]


async def open_intake_form(
    dispatcher: CollectingDispatcher, tracker: Tracker, events: list[EventType], profile: Profile, domain: DomainDict
) -> list[EventType]:
    """Open the intake form here as Rasa's form would: validate the facts the first message gave
    (the same validate_intake_form, on the tracker Rasa would send it) and ask for the first one
    missing. This spares Rasa a second call to the action server, a form run and a prediction on
    every first message. When the form would say something else (a fact rejected, a stop) or has
    nothing to ask, Rasa's form runs as before."""
    trial = tracker.copy()
    trial.add_slots(events)
    trial.active_loop = {"name": "intake_form"}
    # Rasa sends the facts already known as the last events of the tracker: they are validated.
    trial.add_slots([SlotSet(slot, trial.get_slot(slot)) for slot in needed_facts(profile, trial)
                     if trial.get_slot(slot) is not None])
    said = CollectingDispatcher()
    form_events = await ValidateIntakeForm().run(said, trial, domain)
    asked = next((e["value"] for e in form_events if e.get("event") == "slot" and e.get("name") == "requested_slot"), None)
    if said.messages or asked is None or f"utter_ask_{asked}" not in domain.get("responses", {}):
        return [FollowupAction("intake_form")]
    dispatcher.utter_message(response=f"utter_ask_{asked}")
    return [ActiveLoop("intake_form"), *form_events, FollowupAction("action_listen")]


def end_form(tracker: Tracker) -> list[EventType]:
    return [*reset_intake(tracker), SlotSet("requested_slot", None), ActiveLoop(None), FollowupAction("action_listen")]


def emergency_stop(dispatcher: CollectingDispatcher, tracker: Tracker, profile: Profile) -> list[EventType] | None:
    """An emergency typed in the middle of a form ends the form at once: it never enters a work order.
    Judged as a first message is (a past danger or a model's unsure guess does not stop the form)."""
    text = tracker.latest_message.get("text") or ""
    verdict = emergency_verdict(text, tracker.latest_message, profile)
    if verdict is None:
        return None
    utter_referral(dispatcher, verdict)
    if verdict.ask is None:
        return end_form(tracker)
    # Unsure whether it is happening now: "不是" goes back to the request.
    request = tracker.get_slot("content") or text
    return [*end_form(tracker), SlotSet("pending_request", request), SlotSet("pending_kind", tracker.get_slot("category"))]


def real_name_declined(dispatcher: CollectingDispatcher, tracker: Tracker, profile: Profile) -> list[EventType] | None:
    """A citizen who will not give what a real-name rule demands is told why the request cannot be taken
    (桂林 第十二条: 拒绝提供或要求保密的, 不予受理)."""
    rule = profile.real_name_rule(tracker.get_slot("real_name_rule"))
    requested = tracker.get_slot("requested_slot")
    if rule is None or profile.real_name is None or requested not in rule.facts:
        return None
    text = tracker.latest_message.get("text") or ""
    intent = (tracker.latest_message.get("intent") or {}).get("name")
    refuses = intent in ("deny", "anonymous") or facts.declines(text) or (
        requested == "name" and facts.wants_anonymity(text)
    )
    if not refuses:
        return None
    dispatcher.utter_message(
        text=profile.real_name.decline_message,
        json_message={"declined": {"rule": rule.id, "article": profile.real_name.article}},
    )
    return end_form(tracker)


def outside_stop(dispatcher: CollectingDispatcher, tracker: Tracker, profile: Profile) -> list[EventType] | None:
    """A place answer outside the jurisdiction ends the intake with the referral."""
    if tracker.get_slot("requested_slot") != "place":
        return None
    place = facts.place_answer(tracker.latest_message.get("text") or "", profile)
    if place is None or outside_place(place, profile) is None:
        return None
    rule = profile.screen_rule("out_of_jurisdiction")
    dispatcher.utter_message(
        text=rule.message if rule else "该地点不在本热线受理范围内。",
        json_message={"screened": {"reason": "out_of_jurisdiction", "article": rule.article if rule else None}},
    )
    return end_form(tracker)


class StoppableForm(FormValidationAction):
    """A form that some answers end at once (an emergency, a refusal, a place outside the region)."""

    stops = (emergency_stop,)

    @abstractmethod
    def name(self) -> str: ...  # abstract, so the action server does not register this base class

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        profile = profile_for(tracker)
        for stop in self.stops:
            events = stop(dispatcher, tracker, profile)
            if events is not None:
                return events
        return await super().run(dispatcher, tracker, domain)


class ValidateIntakeForm(StoppableForm):
    """Asks only for what the profile requires for this kind of request and is still missing."""

    stops = (emergency_stop, real_name_declined, outside_stop)

    def name(self) -> str:
        return "validate_intake_form"

    async def required_slots(
        self, domain_slots: list[str], dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[str]:
        return needed_facts(profile_for(tracker), tracker)

    def validate_content(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        text = facts.normalize(str(value or ""))
        if not facts.has_content(text) or len(text) < 4:
            dispatcher.utter_message(text="内容太简单了，请说明具体发生了什么事、您希望怎样解决。")
            return {"content": None}
        previous = tracker.get_slot("content")
        if previous and previous != text and not text.startswith(previous):
            text = f"{previous}；{text}"  # a citizen adding detail keeps what they said first
        extra = {"confidential": True} if wants_confidentiality(text, profile_for(tracker)) else {}
        return {"content": text[:2000], **extra}

    def validate_event_time(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        text = str(value or "")
        if text.endswith("）") and "（" in text:
            return {"event_time": text}  # already normalised by action_start_intake; keep the citizen's words
        fact = facts.time_answer(text)
        if fact is None:
            dispatcher.utter_message(text="没能识别出时间，请换个说法，例如：今天上午、11月20日晚上8点、最近一周一直这样。")
            return {"event_time": None}
        return {"event_time": fact.display()}

    def validate_place(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        profile = profile_for(tracker)
        place = facts.place_answer(str(value or ""), profile)
        if place is None:
            dispatcher.utter_message(text="请告诉我具体地点，例如：某某街道某某小区3号楼、某某路与某某路交叉口。")
            return {"place": None}
        return {"place": place}  # a place outside the region was already stopped by outside_stop

    def validate_phone(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        phone = facts.extract_phone(str(value or ""))
        if phone is None:
            dispatcher.utter_message(text="这个号码好像不正确，请输入11位手机号，或带区号的固定电话（如0391-6633123）。")
            return {"phone": None}
        return {"phone": phone}

    def validate_id_number(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        try:
            number = facts.extract_id_number(str(value or ""))
        except facts.IdNumberError:
            dispatcher.utter_message(text="这个身份证号码校验不通过（最后一位校验码或出生日期不对），请核对后重新输入18位身份证号码。")
            return {"id_number": None}
        if number is None:
            dispatcher.utter_message(text="请输入18位居民身份证号码（最后一位可能是X），您的信息将严格保密。")
            return {"id_number": None}
        return {"id_number": number}

    def validate_name(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        text = str(value or "")
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        if intent in ("anonymous", "deny") or facts.wants_anonymity(text):
            return {"name": "匿名", "anonymous": True}
        name = facts.name_answer(text)
        if name is None:
            dispatcher.utter_message(text="请告诉我怎么称呼您（如：王先生、李女士），或回复“匿名”。")
            return {"name": None}
        return {"name": name, "anonymous": False}


SMS_LABELS = {"content": "内容", "event_time": "时间", "phone": "电话"}  # shorter where each character is paid for
SMS_CONTENT_CHARS = 10  # on SMS the content is the citizen's own message: its opening names it


def summary(tracker: Tracker, profile: Profile) -> str:
    category = tracker.get_slot("category")
    label = profile.categories[category].label if category in profile.categories else "诉求"
    sms = channel_of(tracker) == "sms"
    lines = ["请核对：" if sms else f"请核对您的{label}信息："]
    for slot in shown_fields(profile, tracker):
        value = tracker.get_slot(slot)
        if slot == "phone":
            value = facts.mask_phone(value)
        elif slot == "id_number":
            value = facts.mask_id_number(value)
        elif slot == "name":
            value = value or "匿名"
        elif sms and slot == "content" and value and len(value) > SMS_CONTENT_CHARS:
            value = value[:SMS_CONTENT_CHARS] + "…"
        elif sms and slot == "event_time" and value:
            value = re.sub(r"^20\d\d-", "", re.sub(r".*（(.+)）$", r"\1", value))  # "11-26 22:00", as read
        lines.append(f"· {(SMS_LABELS if sms else FIELD_LABELS).get(slot, FIELD_LABELS[slot])}：{value}")
    if sms:
        lines.append("· 电话：本机号码")
    if tracker.get_slot("confidential"):
        lines.append("· 保密：是（您的个人信息不会透露给被反映方）")
    if channel_of(tracker) in (None, "web"):  # elsewhere nothing can be tapped: the channel numbers the choices
        lines.append("信息无误请点“确认提交”；需要修改请点“修改”或直接告诉我要改的内容。")
    return "\n".join(lines)


def shown_fields(profile: Profile, tracker: Tracker) -> list[str]:
    return needed_facts(profile, tracker)


def field_buttons(profile: Profile, tracker: Tracker) -> list[dict[str, str]]:
    return [
        {"title": f"改{FIELD_LABELS[f]}", "payload": f'/correct{{"field":"{f}"}}'} for f in shown_fields(profile, tracker)
    ]


class ActionAskConfirmation(Action):
    """Shows the summary; after a bare '修改' it asks which fact to change instead."""

    def name(self) -> str:
        return "action_ask_confirmation"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        profile = profile_for(tracker)
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        text = tracker.latest_message.get("text") or ""
        named = field_in(text) or any(e.get("entity") == "field" for e in tracker.latest_message.get("entities", []))
        if intent in ("correct", "deny") and not named and tracker.active_loop_name == "confirm_form":
            dispatcher.utter_message(
                text="请问要修改哪一项？", buttons=field_buttons(profile, tracker)
            )
            return []
        dispatcher.utter_message(
            text=summary(tracker, profile),
            buttons=[
                {"title": "确认提交", "payload": "/affirm"},
                {"title": "修改", "payload": "/correct"},
                {"title": "取消", "payload": "/cancel"},
            ],
        )
        return []


def field_in(text: str) -> str | None:
    for field, words in FIELD_WORDS.items():
        if any(w in text for w in words):
            return field
    return None


class ValidateConfirmForm(StoppableForm):
    """Turns the citizen's answer to the summary into yes / correct <field>, or asks again."""

    def name(self) -> str:
        return "validate_confirm_form"

    def validate_confirmation(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        text = facts.normalize(str(value or ""))
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        field = tracker.get_slot("correct_field") or field_in(text)
        if intent == "affirm" or (intent not in ("deny", "correct") and field is None and any(w in text for w in YES_WORDS)):
            return {"confirmation": "yes"}
        if field is not None and field in FIELD_LABELS:
            return {"confirmation": "correct", "correct_field": field}
        return {"confirmation": None}


class ActionFinishConfirmation(Action):
    """Submits the intake to the gateway, or reopens the form for the fact being corrected."""

    def name(self) -> str:
        return "action_finish_confirmation"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        profile = profile_for(tracker)
        if tracker.get_slot("confirmation") == "correct":
            field = tracker.get_slot("correct_field")
            text = tracker.latest_message.get("text") or ""
            new_value = _value_in_correction(field, text, profile)
            events: list[EventType] = [SlotSet("confirmation", None), SlotSet("correct_field", None)]
            if new_value is not None:
                shown = facts.mask_phone(new_value) if field == "phone" else new_value
                dispatcher.utter_message(text=f"已将{FIELD_LABELS[field]}改为：{shown}")
                return [*events, SlotSet(field, new_value), FollowupAction("confirm_form")]
            return [*events, SlotSet(field, None), FollowupAction("intake_form")]

        intake: IntakeFields = {
            "intake_id": tracker.get_slot("intake_id"),
            "profile": profile.id,
            "category": tracker.get_slot("category"),
            "urgent": bool(tracker.get_slot("urgent")),
            "urgent_rule": tracker.get_slot("urgent_rule"),
            "real_name_rule": tracker.get_slot("real_name_rule"),
            "confidential": bool(tracker.get_slot("confidential")),
            "id_number": tracker.get_slot("id_number"),
            "content": tracker.get_slot("content"),
            "event_time": tracker.get_slot("event_time"),
            "place": tracker.get_slot("place"),
            "phone": tracker.get_slot("phone"),
            "name": None if tracker.get_slot("anonymous") else tracker.get_slot("name"),
            "anonymous": bool(tracker.get_slot("anonymous")),
            "screening_doubt": tracker.get_slot("screening_doubt"),
        }
        dispatcher.utter_message(json_message={"intake": intake})
        return reset_intake(tracker)


def _value_in_correction(field: str | None, text: str, profile: Profile) -> str | None:
    """The new value when the correction carries it (电话改成13800001234), else None."""
    if field == "phone":
        return facts.extract_phone(text)
    if field == "event_time":
        fact = facts.extract_time(text)
        return fact.display() if fact else None
    if field == "place":
        return facts.extract_place(text, profile)
    if field == "id_number":
        try:
            return facts.extract_id_number(text)
        except facts.IdNumberError:
            return None
    return None


class ActionCancelIntake(Action):
    def name(self) -> str:
        return "action_cancel_intake"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        if tracker.active_loop_name or tracker.get_slot("intake_id"):
            dispatcher.utter_message(response="utter_cancelled", json_message={"cancelled": True})
            return [*reset_intake(tracker), SlotSet("requested_slot", None), ActiveLoop(None)]
        text = tracker.latest_message.get("text") or ""
        if facts.extract_order_number(text) or any(w in text for w in ("工单", "单子", "投诉", "举报", "诉求")):
            return [FollowupAction("action_withdraw")]  # 撤回我的投诉 with no form open: a submitted order
        dispatcher.utter_message(response="utter_nothing_to_cancel")
        return []


class ActionRequestHuman(Action):
    """Hands the live chat to a human agent; the gateway stops routing to the bot until released."""

    def name(self) -> str:
        return "action_request_human"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        dispatcher.utter_message(response="utter_handoff", json_message={"handoff": "agent"})
        return [SlotSet("requested_slot", None), ActiveLoop(None)]


class ActionWithdraw(Action):
    """撤回: the gateway finds the citizen's open order (by number, or their recent ones), asks them to
    confirm, and withdraws it on `/confirm_withdraw{"order_number": …}` (a button, or its title typed)."""

    def name(self) -> str:
        return "action_withdraw"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        message = tracker.latest_message
        text = message.get("text") or ""
        entities = {e.get("entity"): e.get("value") for e in message.get("entities") or []}
        confirmed = (message.get("intent") or {}).get("name") == "confirm_withdraw"
        number = entities.get("order_number") if confirmed else facts.extract_order_number(text)
        # A phone only addresses the gateway's one-time code; it proves nothing, least of all at a confirmation.
        phone = None if confirmed else facts.extract_phone(text)
        withdraw: WithdrawFields = {"number": number, "phone": phone, "confirmed": confirmed}
        dispatcher.utter_message(json_message={"withdraw": withdraw})
        return []


# A supplement refers to something already reported; without any of these it is a new request.
REFERS_BACK = ("补充", "追加", "补冲", "之前", "上次", "刚才", "前几天", "前天", "昨天反映", "工单", "单号", "又", "还有", "新情况")
SUPPLEMENT_WORDS = ("补充", "追加", "情况", "一下", "材料", "新的", "工单", "我要", "想要", "还有", "之前", "上次", "反映的")


def supplement_substance(text: str) -> str:
    """What is left of a supplement message without the number and the words that only announce it."""
    rest = facts.normalize(text)
    number = facts.extract_order_number(rest)
    if number:
        rest = rest.upper().replace(number, "")
    for word in SUPPLEMENT_WORDS:
        rest = rest.replace(word, "")
    return "".join(ch for ch in rest if ch.isalnum())


class ActionSupplement(Action):
    """补充: new facts for an order already made; asks for them when the message only announces them."""

    def name(self) -> str:
        return "action_supplement"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        text = tracker.latest_message.get("text") or ""
        number = facts.extract_order_number(text)
        if number is None and not any(word in text for word in REFERS_BACK):
            return [FollowupAction("action_start_intake")]  # 我要反映个情况: a new request, not a supplement
        if len(supplement_substance(text)) >= 6:
            dispatcher.utter_message(json_message={"supplement": {"number": number, "phone": facts.extract_phone(text), "text": facts.normalize(text)}})
            return []
        return [SlotSet("supplement_number", number), SlotSet("supplement_text", None), FollowupAction("supplement_form")]


class ValidateSupplementForm(StoppableForm):
    def name(self) -> str:
        return "validate_supplement_form"

    def validate_supplement_text(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        text = facts.normalize(str(value or ""))
        if not facts.has_content(text) or len(text) < 4:
            dispatcher.utter_message(text="请直接写明要补充的新情况，例如：昨晚又吵到凌晨两点。")
            return {"supplement_text": None}
        return {"supplement_text": text[:2000]}


class ActionSubmitSupplement(Action):
    def name(self) -> str:
        return "action_submit_supplement"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        dispatcher.utter_message(
            json_message={
                "supplement": {"number": tracker.get_slot("supplement_number"), "text": tracker.get_slot("supplement_text")}
            }
        )
        return [SlotSet("supplement_number", None), SlotSet("supplement_text", None)]
