"""Human agents: accounts from the command line, the console's login, CSRF and lockout, the atomic
claim on two replicas (SQLite and PostgreSQL), and a whole handoff through the real bot."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bench.postgres import available as postgres_available
from bench.postgres import postgres
from gateway.botproc import free_port
from gateway.router import bot_sender
from handoff import agents
from handoff.agents import AgentAudit
from storage.base import utcnow
from storage.conversations import Conversation, Message
from storage.db import make_engine, make_sessions
from tests.conftest import RASA_TOKEN, Chat, gateway_client, router_of, settings_for

PASSWORD = "correct horse battery"


async def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    resp = await client.post("/console/api/login", json={"name": name, "password": password})
    assert resp.status == 200, await resp.text()
    return (await resp.json())["csrf"]


async def waiting_conversation(client: TestClient, sender: str) -> int:
    async with router_of(client).sessions() as session:
        conv = Conversation(channel="web", sender_id=sender, profile="jiyuan", state="waiting", waiting_since=utcnow())
        session.add(conv)
        await session.commit()
        return conv.id


async def audit_actions(client: TestClient) -> list[tuple[str, str]]:
    async with router_of(client).sessions() as session:
        rows = await session.execute(select(AgentAudit.agent_name, AgentAudit.action).order_by(AgentAudit.id))
        return [tuple(r) for r in rows]


def test_agents_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    hotline = [sys.executable, "-m", "gateway.cli", "agents"]
    added = subprocess.run([*hotline, "add", "王芳", "--role", "supervisor"], input=PASSWORD + "\n", env=env,
                           capture_output=True, text=True, check=True)
    assert "王芳" in added.stdout and PASSWORD not in added.stdout + added.stderr
    short = subprocess.run([*hotline, "add", "李明"], input="short\n", env=env, capture_output=True, text=True)
    assert short.returncode == 2 and "at least 8" in short.stderr
    subprocess.run([*hotline, "disable", "王芳"], env=env, check=True, capture_output=True)
    listed = subprocess.run([*hotline, "list"], env=env, check=True, capture_output=True, text=True).stdout
    assert listed.strip() == "王芳\tsupervisor\tdisabled"

    async def stored() -> tuple[str, list[str]]:
        engine = make_engine(env["HOTLINE_DATABASE_URL"])
        sessions = make_sessions(engine)
        (agent,) = await agents.listing(sessions)
        async with sessions() as session:
            actions = list(await session.scalars(select(AgentAudit.action).order_by(AgentAudit.id)))
        await engine.dispose()
        return agent.password_hash, actions

    password_hash, actions = asyncio.run(stored())
    assert password_hash.startswith("$argon2id$") and PASSWORD not in password_hash
    assert actions == ["account_added", "account_disabled"]


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[TestClient]:
    """A gateway whose bot is unreachable: the console does not need it to log in or claim."""
    async with gateway_client(settings_for(tmp_path, f"http://127.0.0.1:{free_port()}")) as client:
        await agents.add(router_of(client).sessions, "张伟", PASSWORD, "agent")
        yield client


async def test_the_console_needs_a_login_and_a_csrf_token(console: TestClient) -> None:
    assert (await console.get("/console/api/queue")).status == 401
    page = await console.get("/console/", allow_redirects=False)
    assert page.status == 302 and page.headers["Location"] == "/console/login"
    assert (await console.post("/console/api/conversations/1/claim")).status == 401
    resp = await console.post("/console/api/login", json={"name": "张伟", "password": PASSWORD})
    assert resp.status == 200
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    csrf = (await resp.json())["csrf"]
    conv_id = await waiting_conversation(console, "csrf-citizen")
    assert (await console.post(f"/console/api/conversations/{conv_id}/claim")).status == 403
    forged = await console.post(f"/console/api/conversations/{conv_id}/claim", headers={"X-CSRF-Token": "x" * 43})
    assert forged.status == 403
    queue = await (await console.get("/console/api/queue")).json()
    assert [w["conversation_id"] for w in queue["waiting"]] == [conv_id]
    ok = await console.post(f"/console/api/conversations/{conv_id}/claim", headers={"X-CSRF-Token": csrf})
    assert ok.status == 200
    assert (await console.get("/console/", allow_redirects=False)).status == 200
    await agents.disable(router_of(console).sessions, "张伟")  # a disabled account stops at once
    assert (await console.get("/console/api/queue")).status == 401
    assert [a for _, a in await audit_actions(console)] == [
        "account_added", "login", "claim", "account_disabled"]


async def test_console_bodies_too_deep_or_not_text_are_refused(console: TestClient) -> None:
    """The console reads JSON with the gateway's one loader: 30,000-deep nesting (a RecursionError, so
    500) and a lone surrogate (not storable text) are the sender's error."""
    headers = {"Content-Type": "application/json"}
    deep = await console.post("/console/api/login", data="[" * 30000 + "]" * 30000, headers=headers)
    surrogate = await console.post("/console/api/login", data='{"name": "\\ud800", "password": "x"}', headers=headers)
    assert (deep.status, surrogate.status) == (400, 400)


async def test_failed_logins_lock_the_name_out(console: TestClient) -> None:
    for _ in range(agents.LOCKOUT_FAILURES):
        resp = await console.post("/console/api/login", json={"name": "张伟", "password": "wrong password"})
        assert resp.status == 401
    locked = await console.post("/console/api/login", json={"name": "张伟", "password": PASSWORD})
    assert locked.status == 401  # the right password no longer helps within the window
    other = await console.post("/console/api/login", json={"name": "nobody", "password": PASSWORD})
    assert other.status == 401  # and the address is locked out too
    async with router_of(console).sessions() as session:
        rows = (await session.scalars(select(AgentAudit).where(AgentAudit.action == "login_failed"))).all()
    assert len(rows) == agents.LOCKOUT_FAILURES + 2 and all(r.address == "127.0.0.1" for r in rows)
    assert rows[-2].detail == {"locked": True}


@contextlib.contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
        return
    if not postgres_available():
        pytest.skip("needs Debian's postgresql binaries and root")
    with postgres() as url:
        yield url


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_two_agents_claiming_at_once_on_two_replicas_get_one_winner(tmp_path: Path, kind: str) -> None:
    offline = f"http://127.0.0.1:{free_port()}"
    with database(kind, tmp_path) as url:
        settings = settings_for(tmp_path, offline, database_url=url, console_secret="shared-secret")
        async with gateway_client(settings) as one, gateway_client(settings) as two:
            sessions = router_of(one).sessions
            await agents.add(sessions, "张伟", PASSWORD, "agent")
            await agents.add(sessions, "李娜", PASSWORD, "agent")
            tokens = [await login(one, "张伟"), await login(two, "李娜")]
            for round_ in range(5):
                conv_id = await waiting_conversation(one, f"race-{round_}")
                responses = await asyncio.gather(*(
                    client.post(f"/console/api/conversations/{conv_id}/claim", headers={"X-CSRF-Token": token})
                    for client, token in ((one, tokens[0]), (two, tokens[1]))
                ))
                statuses = [r.status for r in responses]
                assert sorted(statuses) == [200, 409], statuses
                winner = ("张伟", "李娜")[statuses.index(200)]
                loser = responses[statuses.index(409)]
                assert (await loser.json())["error"] == f"已被{winner}接入"
                async with sessions() as session:
                    conv = await session.get(Conversation, conv_id)
                    assert conv is not None and conv.state == "with_agent"
                    holder = await agents.get(sessions, conv.agent_id or 0)
                assert holder is not None and holder.name == winner
                again = (one, two)[statuses.index(200)]
                repeat = await again.post(f"/console/api/conversations/{conv_id}/claim",
                                          headers={"X-CSRF-Token": tokens[statuses.index(200)]})
                assert repeat.status == 200  # claiming what you hold is not an error
            claims = [a for _, a in await audit_actions(one) if a == "claim"]
            assert len(claims) == 5


async def rasa_events(rasa_url: str, conv: Conversation) -> list[str]:
    async with aiohttp.ClientSession() as http, http.get(
        f"{rasa_url}/conversations/{bot_sender(conv)}/tracker", params={"include_events": "ALL", "token": RASA_TOKEN}
    ) as resp:
        return [e["event"] for e in (await resp.json())["events"]]


@pytest.mark.rasa
async def test_an_agent_takes_a_chat_from_the_real_bot_and_hands_it_back(gateway: TestClient, rasa_url: str) -> None:
    sessions = router_of(gateway).sessions
    await agents.add(sessions, "张伟", PASSWORD, "agent")
    csrf = await login(gateway, "张伟")  # someone is online: the citizens queue rather than get a callback order
    other = Chat(gateway, "handoff-other")
    assert "第1位" in Chat.text(await other.say("转人工"))
    chat = Chat(gateway, "handoff-citizen")
    first = Chat.text(await chat.say("转人工"))
    assert "转接人工客服" in first and "第2位" in first
    assert "已为您取消" in Chat.text(await other.say("取消"))  # back to the bot, out of the queue
    assert "第1位" in Chat.text(await chat.say("我家楼下的路灯坏了一个星期了"))
    assert "您的诉求属于" in Chat.text(await other.say("小区门口的路灯坏了"))  # the bot answers the other again
    queue = (await (await gateway.get("/console/api/queue")).json())["waiting"]
    assert [(w["channel"], w["waited_s"] >= 0) for w in queue] == [("web", True)]
    conv_id = queue[0]["conversation_id"]
    headers = {"X-CSRF-Token": csrf}
    ws = await gateway.ws_connect("/console/ws")
    assert (await gateway.post(f"/console/api/conversations/{conv_id}/claim", headers=headers)).status == 200
    assert await ws.receive_json(timeout=5) == {"type": "queue"}  # every console re-reads the queue
    async with sessions() as session:
        conv = await session.get(Conversation, conv_id)
    assert conv is not None and (await rasa_events(rasa_url, conv))[-1] == "pause"
    # The citizen's next message goes to the agent, not the bot; the greeting waited for it.
    assert Chat.text(await chat.say("你好，在吗")) == "人工客服已接入，请直接说明您的问题。"
    frame = await ws.receive_json(timeout=5)
    assert frame == {**frame, "type": "message", "conversation_id": conv_id, "author": "citizen", "text": "你好，在吗"}
    sent = await gateway.post(f"/console/api/conversations/{conv_id}/messages", json={"text": "您好，请问路灯在哪条街？"},
                              headers=headers)
    assert sent.status == 200
    assert Chat.text(await chat.say("宣化街")) == "您好，请问路灯在哪条街？"
    order = {"kind": "help", "facts": {"content": "宣化街路灯坏了一个星期", "place": "宣化街"}, "urgent": False}
    filed = await gateway.post(f"/console/api/conversations/{conv_id}/work-order", json=order, headers=headers)
    number = (await filed.json())["number"]
    again = await gateway.post(f"/console/api/conversations/{conv_id}/work-order", json=order, headers=headers)
    assert (await again.json()) == {"number": number, "outcome": "created"}  # the same idempotent creation
    told = Chat.text(await chat.say("好的"))
    assert number in told and "工单号" in told
    transcript = await (await gateway.get(f"/console/api/conversations/{conv_id}")).json()
    authors = [m["author"] for m in transcript["messages"]]
    assert authors[:2] == ["citizen", "bot"] and authors[-2:] == ["agent", "citizen"]
    assert (await gateway.post(f"/console/api/conversations/{conv_id}/release", headers=headers)).status == 200
    assert (await rasa_events(rasa_url, conv))[-1] == "resume"
    back = Chat.text(await chat.say("你好"))
    assert "智能客服继续为您服务" in back and "12345" in back  # the agent's goodbye, then the bot again
    async with sessions() as session:
        state = await session.scalar(select(Conversation.state).where(Conversation.id == conv_id))
        agent_lines = (await session.scalars(select(Message.text).where(
            Message.conversation_id == conv_id, Message.direction == "out"))).all()
    assert state == "bot" and "您好，请问路灯在哪条街？" in agent_lines
    actions = [a for _, a in await audit_actions(gateway)]
    assert actions == ["account_added", "login", "claim", "message", "work_order", "work_order", "read", "release"]
    await ws.close()


async def test_a_citizen_message_reaches_the_console_on_another_replica_through_redis(
    tmp_path: Path, redis_url: str
) -> None:
    """The citizen's page talks to one replica, the agent's console to another: Redis pub/sub carries it.
    While a person holds the conversation the bot is not asked, so none is running here."""
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", redis_url=redis_url,
                            console_secret="shared-secret")
    async with gateway_client(settings) as citizen_side, gateway_client(settings) as agent_side:
        await agents.add(router_of(agent_side).sessions, "张伟", PASSWORD, "agent")
        csrf = await login(agent_side, "张伟")
        conv_id = await waiting_conversation(agent_side, "redis-citizen")
        ws = await agent_side.ws_connect("/console/ws")
        claimed = await agent_side.post(f"/console/api/conversations/{conv_id}/claim", headers={"X-CSRF-Token": csrf})
        assert claimed.status == 200
        assert await ws.receive_json(timeout=5) == {"type": "queue"}  # the claim took it out of the queue
        replies = await Chat(citizen_side, "redis-citizen").say("请问有人吗")
        assert Chat.text(replies) == "人工客服已接入，请直接说明您的问题。"  # the greeting, kept for the REST client
        frame = await ws.receive_json(timeout=5)
        assert (frame["conversation_id"], frame["author"], frame["text"]) == (conv_id, "citizen", "请问有人吗")
        # "取消" leaves the queue only while waiting: with a person it is a message for that person.
        assert await Chat(citizen_side, "redis-citizen").say("取消", message_id="redis-2") == []
        assert (await ws.receive_json(timeout=5))["text"] == "取消"
        async with router_of(citizen_side).sessions() as session:
            assert await session.scalar(select(Conversation.state).where(Conversation.id == conv_id)) == "with_agent"
        await ws.close()


@pytest.mark.rasa
async def test_the_queue_is_pushed_to_consoles_on_every_replica_through_redis(
    tmp_path: Path, redis_url: str, rasa_url: str
) -> None:
    """A citizen asks the real bot for a person on replica A; an agent's console socket on replica B
    is told at once (no polling), and a claim on B is told to a colleague's console on A."""
    settings = settings_for(tmp_path, rasa_url, redis_url=redis_url, console_secret="shared-secret")
    async with gateway_client(settings) as side_a, gateway_client(settings) as side_b:
        for name in ("张伟", "李娜"):
            await agents.add(router_of(side_a).sessions, name, PASSWORD, "agent")
        csrf = await login(side_b, "张伟")
        await login(side_a, "李娜")
        ws_b = await side_b.ws_connect("/console/ws")
        ws_a = await side_a.ws_connect("/console/ws")
        await side_b.get("/console/api/me")  # both online: the citizen queues instead of a callback order
        replies = await Chat(side_a, "queue-push").say("转人工")
        assert "第1位" in Chat.text(replies)
        assert await ws_b.receive_json(timeout=5) == {"type": "queue"}
        assert await ws_a.receive_json(timeout=5) == {"type": "queue"}
        waiting = (await (await side_b.get("/console/api/queue")).json())["waiting"]
        assert [w["channel"] for w in waiting] == ["web"]
        conv_id = waiting[0]["conversation_id"]
        claimed = await side_b.post(f"/console/api/conversations/{conv_id}/claim", headers={"X-CSRF-Token": csrf})
        assert claimed.status == 200
        assert await ws_a.receive_json(timeout=5) == {"type": "queue"}
        assert (await (await side_a.get("/console/api/queue")).json())["waiting"] == []
        await ws_a.close()
        await ws_b.close()
