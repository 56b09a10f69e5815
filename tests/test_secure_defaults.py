"""Secure defaults (#14): no public address with the default token, named scoped tokens made by the
CLI and kept hashed, every full phone or ID number read audited, and handling units' view of what
they need (confidential orders and reports keep the citizen's identity from them)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import select

from gateway.botproc import free_port
from gateway.config import Settings
from gateway.models import ApiToken
from handoff.agents import AgentAudit
from handoff.workorders import create_from_intake
from profiles import load
from tests.conftest import gateway_client, router_of, settings_for

HOTLINE = [sys.executable, "-m", "gateway.cli"]
PHONE = "13800001234"


def hotline(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    environ |= {"HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}", **env}
    return subprocess.run([*HOTLINE, *args], env=environ, capture_output=True, text=True, timeout=120)


def test_a_public_address_with_the_default_or_an_empty_token_is_refused(tmp_path: Path) -> None:
    for token in (None, "", "short"):
        env = {"HOTLINE_HOST": "0.0.0.0", "HOTLINE_PORT": str(free_port())}
        if token is not None:
            env["HOTLINE_API_TOKEN"] = token
        done = hotline(tmp_path, "serve", **env)
        assert done.returncode == 2, done
        [line] = done.stderr.strip().splitlines()
        assert "refusing to listen on 0.0.0.0" in line and "HOTLINE_API_TOKEN" in line
    # Unless told otherwise the gateway listens on loopback, where the default token is allowed.
    assert Settings().host == "127.0.0.1" and Settings().insecure_reason() is None
    assert Settings(host="0.0.0.0", api_token=uuid.uuid4().hex).insecure_reason() is None
    assert Settings(host="::1").insecure_reason() is None and Settings(host="10.0.0.5").insecure_reason()


def intake(**extra: object) -> dict[str, object]:
    return {"intake_id": uuid.uuid4().hex, "category": "complaint", "content": f"天坛路烧烤店噪音扰民，电话{PHONE}",
            "place": "天坛路88号", "event_time": "每晚", "phone": PHONE, "name": "王女士", "anonymous": False,
            "id_number": "11010519491231002X", **extra}


async def test_named_tokens_have_scopes_are_kept_hashed_and_full_numbers_are_audited(tmp_path: Path) -> None:
    made = hotline(tmp_path, "tokens", "add", "unit-a", "--scope", "orders:read")
    assert made.returncode == 0, made.stderr
    unit = made.stdout.strip()
    officer = hotline(tmp_path, "tokens", "add", "officer", "--scope", "orders:read", "--scope", "contact:read")
    assert officer.returncode == 0, officer.stderr
    assert hotline(tmp_path, "tokens", "add", "x", "--scope", "everything").returncode == 2
    listed = hotline(tmp_path, "tokens", "list").stdout
    assert "unit-a\torders:read\tactive" in listed and unit not in listed

    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", api_token="")
    async with gateway_client(settings, background=False) as client:
        sessions = router_of(client).sessions
        jiyuan = load("jiyuan")
        plain = await create_from_intake(sessions, intake(), jiyuan, channel="web", conversation_id=None)
        sealed = await create_from_intake(sessions, intake(category="report", confidential=True,
                                                           content="举报某单位工作人员收受好处"),
                                          jiyuan, channel="web", conversation_id=None)
        async with sessions() as session:
            rows = (await session.scalars(select(ApiToken))).all()
        assert {r.name for r in rows} == {"unit-a", "officer"} and all(unit != r.token_hash for r in rows)

        def auth(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        view = await (await client.get(f"/api/tickets/{plain.number}", headers=auth(unit))).json()
        assert view["contact"]["phone"] == PHONE and view["contact"]["id_number"] is None
        assert PHONE not in str(view["transcript"]) and view["confidential"] is False
        assert {"supplements", "repeat_count", "urgent_reason", "escalated"} <= set(view)
        hidden = await (await client.get(f"/api/tickets/{sealed.number}", headers=auth(unit))).json()
        assert hidden["confidential"] is True and hidden["contact"]["withheld"] is True
        assert hidden["contact"]["phone"] == "138****1234" and hidden["contact"]["name"] is None
        full = await (await client.get(f"/api/tickets/{sealed.number}", headers=auth(officer.stdout.strip()))).json()
        assert full["contact"]["phone"] == PHONE and full["contact"]["id_number"] == "11010519491231002X"
        # No scope, no data; an empty token is no token; the env token is unset here.
        assert (await client.get("/metrics", headers=auth(unit))).status == 403
        assert (await client.post(f"/api/tickets/{plain.number}/events", json={"event": "signed"},
                                  headers=auth(unit))).status == 403
        assert (await client.get(f"/api/tickets/{plain.number}", headers=auth(""))).status == 401
        async with sessions() as session:
            audits = (await session.scalars(select(AgentAudit).where(AgentAudit.action == "read_contact")
                                            .order_by(AgentAudit.id))).all()
        assert [(a.agent_name, a.detail) for a in audits] == [
            ("token:unit-a", {"number": plain.number, "fields": ["phone"]}),
            ("token:officer", {"number": sealed.number, "fields": ["phone", "id_number"]}),
        ]
        assert hotline(tmp_path, "tokens", "revoke", "unit-a").returncode == 0
        assert (await client.get(f"/api/tickets/{plain.number}", headers=auth(unit))).status == 401
