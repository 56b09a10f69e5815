"""The retention job (#14, 桂林 第十五条): past each profile's window, chat text and senders are
anonymised, media and Rasa's tracker events deleted, and what went is in the audit log."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway import retention
from handoff.agents import AgentAudit
from profiles import load
from storage.conversations import Conversation, Message
from storage.media import Media

NOW = dt.datetime(2029, 12, 1, tzinfo=dt.UTC)
PHONE = "13800001234"
# Rasa 3.6's SQLTrackerStore table, as it creates it (rasa/core/tracker_store.py, SQLEvent).
RASA_EVENTS = """CREATE TABLE events (id INTEGER PRIMARY KEY, sender_id VARCHAR(255) NOT NULL,
    type_name VARCHAR(255) NOT NULL, timestamp FLOAT, intent_name VARCHAR(255), action_name VARCHAR(255), data TEXT)"""


async def tracker_store(path: Path, *ages_days: int) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    engine = create_async_engine(url)
    async with engine.begin() as db:
        await db.execute(text(RASA_EVENTS))
        for age in ages_days:
            await db.execute(text("INSERT INTO events (sender_id, type_name, timestamp, data) VALUES ('k', 'slot', :t, :d)"),
                             {"t": (NOW - dt.timedelta(days=age)).timestamp(), "d": json.dumps({"value": PHONE})})
    await engine.dispose()
    return url


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
    engine = create_async_engine(tracker_url)
    async with engine.connect() as db:
        assert (await db.execute(text("SELECT count(*) FROM events"))).scalar() == 1
    await engine.dispose()
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
    assert json.loads(ok.stdout)["at"] == "2029-12-01T00:00:00+08:00"
