"""The retention job (#14, 桂林 第十五条): past each profile's window, chat text and senders are
anonymised, media and Rasa's tracker events deleted, and what went is in the audit log."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from channels.sms.models import SmsRecord
from gateway import retention
from gateway.app import make_channels
from gateway.botproc import BOT_VENV
from gateway.schema import migrate
from handoff.agents import AgentAudit
from handoff.models import Revisit, Survey, WorkOrder
from profiles import load
from storage.conversations import Conversation, Message
from storage.db import make_engine, make_sessions
from storage.media import Media
from storage.outbox import OutboxItem
from tests.conftest import settings_for

NOW = dt.datetime(2029, 12, 1, tzinfo=dt.UTC)
PHONE = "13800001234"
RASA_STORE = Path(__file__).with_name("rasa_tracker_store.py")


def rasa_store(*args: str) -> str:
    """Rasa's own SQLTrackerStore, in the bot's venv (about a second; no Rasa server)."""
    done = subprocess.run([str(BOT_VENV / "bin" / "python"), str(RASA_STORE), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def tracker_store(path: Path, *ages_days: int) -> str:
    """A tracker whose phone slot was set `ages_days` ago, saved by Rasa into the table Rasa creates."""
    rasa_store("save", str(path), "k", PHONE, *(str((NOW - dt.timedelta(days=age)).timestamp()) for age in ages_days))
    return f"sqlite+aiosqlite:///{path}"


async def chat(sessions, profile: str, sender: str, *ages_days: int) -> int:  # noqa: ANN001
    async with sessions() as session:
        conv = Conversation(channel="sms", sender_id=sender, profile=profile, state="bot",
                            created_at=NOW - dt.timedelta(days=max(ages_days)),
                            updated_at=NOW - dt.timedelta(days=min(ages_days)))
        session.add(conv)
        await session.flush()
        for age in ages_days:
            session.add(Message(conversation_id=conv.id, direction="in", text=f"我的电话{PHONE}，{age}天前",
                                payload={"attachments": [{"type": "voice"}]}, status="done",
                                created_at=NOW - dt.timedelta(days=age)))
        await session.commit()
        return conv.id


async def test_retention_follows_each_profiles_window_and_is_audited(sessions, tmp_path: Path) -> None:  # noqa: ANN001
    jiyuan, guilin = load("jiyuan"), load("guilin")
    old_jiyuan = await chat(sessions, "jiyuan", PHONE, 800, 790)
    old_guilin = await chat(sessions, "guilin", "13900002222", 800)  # 桂林 keeps three years
    mixed = await chat(sessions, "jiyuan", "13700003333", 800, 3)
    async with sessions() as session:
        for age in (800, 10):
            session.add(Media(channel="wechat:mp", media_id=f"m{age}", content_type="audio/amr", size=1,
                              sha256="0" * 64, data=b"x", created_at=NOW - dt.timedelta(days=age)))
        await session.commit()
    tracker_url = await tracker_store(tmp_path / "tracker.db", 40, 1)

    done = await retention.run(sessions, jiyuan, at=NOW, tracker_db_url=tracker_url)
    assert (done["messages_emptied"], done["senders_pseudonymised"], done["media_deleted"],
            done["tracker_events_deleted"]) == (3, 1, 1, 1)
    async with sessions() as session:
        convs = {c.id: c for c in (await session.scalars(select(Conversation))).all()}
        texts = {m.conversation_id: [] for m in (await session.scalars(select(Message))).all()}
        for m in (await session.scalars(select(Message).order_by(Message.id))).all():
            texts[m.conversation_id].append(m.text)
        media = (await session.scalars(select(Media.media_id))).all()
        [record] = (await session.scalars(select(AgentAudit).where(AgentAudit.action == "retention"))).all()
    assert convs[old_jiyuan].sender_id == f"erased:{old_jiyuan}" and texts[old_jiyuan] == ["", ""]
    assert convs[old_guilin].sender_id == "13900002222"
    assert texts[old_guilin][0].endswith("800天前") and guilin.retention.conversation_days > 800
    assert convs[mixed].sender_id == "13700003333" and texts[mixed] == ["", f"我的电话{PHONE}，3天前"]
    assert media == ["m10"]
    assert record.detail is not None and record.detail["messages_emptied"] == 3 and PHONE not in json.dumps(record.detail)
    # Rasa reads what is left: the recent slot event, the old one gone.
    [event] = json.loads(rasa_store("read", str(tmp_path / "tracker.db"), "k"))
    assert event["event"] == "slot" and event["timestamp"] == (NOW - dt.timedelta(days=1)).timestamp()
    # A second pass finds nothing more.
    again = await retention.run(sessions, jiyuan, at=NOW, tracker_db_url=tracker_url)
    assert (again["messages_emptied"], again["senders_pseudonymised"], again["media_deleted"]) == (0, 0, 0)


def test_the_cli_runs_as_of_a_time(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env |= {"HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'h.db'}",
            "HOTLINE_TRACKER_DB_URL": f"sqlite+aiosqlite:///{tmp_path / 'none.db'}"}
    bad = subprocess.run([sys.executable, "-m", "gateway.cli", "retention", "run", "--at", "2029-12-01T00:00:00"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "offset" in bad.stderr
    env.pop("HOTLINE_TRACKER_DB_URL")
    ok = subprocess.run([sys.executable, "-m", "gateway.cli", "retention", "run", "--at", "2029-12-01T00:00:00+08:00"],
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    done = json.loads(ok.stdout)
    assert done["at"] == "2029-12-01T00:00:00+08:00"
    assert done["sms_records_erased"] == 0  # the channels' hook runs (here on an empty table)


async def work_order(sessions, profile: str, age_days: int, phone: str) -> int:  # noqa: ANN001
    at = NOW - dt.timedelta(days=age_days)
    async with sessions() as session:
        order = WorkOrder(intake_id=f"{profile}-{age_days}-{phone}", number=f"{profile}{age_days}{phone[-4:]}",
                          profile=profile, channel="sms", category="complaint", facts={}, contact_phone=phone,
                          created_at=at, dispatch_due_at=at, due_at=at, limit_working_days=5)
        session.add(order)
        await session.flush()
        session.add(Survey(work_order_id=order.id, phone=phone, status="answered", rating="unsatisfied",
                           rated_at=at, send_at=at, created_at=at, outcome="redo",
                           history=[{"at": at.isoformat(), "text": f"不满意，回电{phone}", "meaning": "unsatisfied"}]))
        session.add(Revisit(dedupe_key=f"rating:{order.id}", reason="unsatisfied", work_order_id=order.id,
                            phone=phone, note="市民评价不满意（第1轮回访）", created_at=at))
        text = f"【12345】您的工单{order.number}已办结，请回复1满意"
        session.add(SmsRecord(provider="log", phone=phone, text=text, created_at=at))
        session.add(OutboxItem(channel="sms", recipient=phone, body={"text": text}, status="sent", created_at=at))
        await session.commit()
        return order.id


async def test_retention_erases_survey_revisit_and_sms_phones_but_keeps_ratings(sessions, tmp_path: Path) -> None:  # noqa: ANN001
    """#14: survey and revisit phones, the citizen's survey replies and the SMS channel's records of
    what was sent stayed forever. Past the window the phone and words go; the ratings stay countable."""
    await erases_followups(sessions, tmp_path)


async def test_retention_erases_followups_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    await migrate(pg_url)
    engine = make_engine(pg_url)
    try:
        await erases_followups(make_sessions(engine), tmp_path)
    finally:
        await engine.dispose()


async def erases_followups(sessions, tmp_path: Path) -> None:  # noqa: ANN001
    old = await work_order(sessions, "jiyuan", 800, PHONE)
    kept_guilin = await work_order(sessions, "guilin", 800, "13900002222")  # 桂林 第十五条: three years
    recent = await work_order(sessions, "jiyuan", 10, "13700003333")
    settings = settings_for(tmp_path, "http://127.0.0.1:9")
    forget = [channel.forget for channel in make_channels(settings)]

    done = await retention.run(sessions, load("jiyuan"), at=NOW, forget=forget)
    assert (done["survey_phones_erased"], done["revisit_phones_erased"]) == (1, 1)
    # Records carry no profile: the gateway profile's window (jiyuan, two years) applies to all.
    assert (done["sms_records_erased"], done["outbox_items_erased"]) == (2, 2)
    async with sessions() as session:
        surveys = {s.work_order_id: s for s in (await session.scalars(select(Survey))).all()}
        revisits = {r.work_order_id: r for r in (await session.scalars(select(Revisit))).all()}
        records = (await session.scalars(select(SmsRecord).order_by(SmsRecord.id))).all()
        outbox = (await session.scalars(select(OutboxItem).order_by(OutboxItem.id))).all()
        ratings = dict((await session.execute(select(Survey.rating, func.count()).group_by(Survey.rating))).all())
        [record] = (await session.scalars(select(AgentAudit).where(AgentAudit.action == "retention"))).all()
    gone = surveys[old]
    assert gone.phone == f"erased:{gone.id}" and gone.history == [{"at": gone.history[0]["at"], "text": "",
                                                                   "meaning": "unsatisfied"}]
    assert (gone.rating, gone.status, gone.outcome) == ("unsatisfied", "answered", "redo")
    assert revisits[old].phone is None and revisits[old].reason == "unsatisfied"
    for order, phone in ((kept_guilin, "13900002222"), (recent, "13700003333")):
        assert surveys[order].phone == phone and revisits[order].phone == phone
        assert phone in surveys[order].history[0]["text"]
    assert ratings == {"unsatisfied": 3}  # every rating still counted
    assert [(r.phone.startswith("erased:"), r.text == "") for r in records] == [(True, True), (True, True), (False, False)]
    assert records[2].phone == "13700003333" and records[0].delivery == "sent"
    assert [(o.recipient.startswith("erased:"), o.body) for o in outbox][:2] == [(True, {}), (True, {})]
    assert outbox[2].recipient == "13700003333" and outbox[2].status == "sent"
    assert record.detail is not None and record.detail["sms_records_erased"] == 2
    assert PHONE not in json.dumps(record.detail)
    again = await retention.run(sessions, load("jiyuan"), at=NOW, forget=forget)
    assert (again["survey_phones_erased"], again["revisit_phones_erased"], again["sms_records_erased"],
            again["outbox_items_erased"]) == (0, 0, 0, 0)
