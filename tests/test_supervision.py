"""`hotline run` brings a dead bot process back, or stops with an error when it keeps dying; and
`/healthz` says which part is down while citizens' messages wait in the database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from gateway.botproc import BotSetupError, Part, Supervisor, free_port, start_action_server, stop, wait_http
from gateway.cluster import RedisServer
from gateway.config import ROOT
from tests.conftest import gateway_client, settings_for


def wait_until(check, within_s: float) -> None:  # noqa: ANN001 - a zero-argument predicate
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_a_killed_action_server_is_started_again(tmp_path: Path) -> None:
    port = free_port()
    actions = Part("action server", port, lambda: start_action_server(port, tmp_path / "actions.log"),
                   lambda proc: wait_http(f"http://127.0.0.1:{port}/health", 120, proc))
    actions.start()
    gave_up: list[Part] = []
    try:
        with Supervisor([actions], gave_up.append, base_s=0.1, poll_s=0.1) as supervisor:
            first = actions.proc
            assert first is not None
            actions.kill()
            wait_until(lambda: supervisor.restarts["action server"] == 1, 120)
            wait_http(f"http://127.0.0.1:{port}/health", 120)  # the new process answers
            assert actions.proc is not first and actions.proc.poll() is None
        assert gave_up == []
    finally:
        actions.stop()


def test_action_workers_each_answer_on_the_one_port(tmp_path: Path) -> None:
    """`start_action_server(workers=2)`: two processes serve Rasa's one action endpoint. Each worker
    alone (the other stopped with SIGSTOP) must answer with our actions loaded."""
    port = free_port()
    proc = start_action_server(port, tmp_path / "actions.log", workers=2)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120, proc)
        workers = [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(workers) == 2
        for alone in workers:
            others = [pid for pid in workers if pid != alone]
            for pid in others:
                os.kill(pid, signal.SIGSTOP)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/actions", timeout=10) as resp:  # noqa: S310
                    names = {a["name"] for a in json.load(resp)}
                assert "action_start_intake" in names, alone
            finally:
                for pid in others:
                    os.kill(pid, signal.SIGCONT)
    finally:
        stop(proc)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # stopping the parent stops its workers


def test_a_part_that_keeps_dying_makes_the_supervisor_give_up_once() -> None:
    def launch() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    def ready(proc: subprocess.Popen[bytes]) -> None:
        if proc.wait() != 0:
            raise BotSetupError("exited")

    dying = Part("rasa", free_port(), launch, ready)
    dying.proc = launch()
    gave_up: list[Part] = []
    with Supervisor([dying], gave_up.append, max_restarts=3, base_s=0.01, poll_s=0.02) as supervisor:
        wait_until(lambda: supervisor.gave_up is not None, 30)
    assert gave_up == [dying] and supervisor.restarts["rasa"] == 3  # three restarts, then it stopped


def test_restart_backoff_doubles_up_to_its_cap() -> None:
    supervisor = Supervisor([], lambda part: None, base_s=1.0, cap_s=30.0)
    assert [supervisor.delay_s(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


async def test_healthz_names_each_part_and_counts_waiting_messages(tmp_path: Path) -> None:
    redis = RedisServer()
    redis.start()
    try:
        settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()},http://127.0.0.1:{free_port()}",
                                redis_url=redis.url, action_url=f"http://127.0.0.1:{free_port()}")
        async with gateway_client(settings) as client:
            sender = f"health-{uuid.uuid4().hex[:6]}"
            resp = await client.post("/webhooks/rest/webhook",
                                     json={"sender": sender, "message": "小区路灯坏了", "message_id": "h-1"})
            assert resp.status == 200  # kept while the bot is down
            health = await client.get("/healthz")
            assert health.status == 200
            assert await health.json() == {
                "status": "degraded", "database": "up", "redis": "up", "rasa": ["down", "down"], "bot": "down",
                "action_server": "down", "waiting_for_bot": 1, "outbox_backlog": 0,
            }
            redis.stop()
            health = await client.get("/healthz")
            body = await health.json()
            assert health.status == 503 and body["status"] == "down" and body["redis"] == "down"
    finally:
        redis.stop()


async def test_healthz_ok_with_the_real_bot(gateway) -> None:  # noqa: ANN001 - the gateway fixture
    body = await (await gateway.get("/healthz")).json()
    assert body["status"] == "ok" and body["rasa"] == ["up"] and body["database"] == "up"


def children(pid: int) -> dict[str, int]:
    """The bot processes `hotline run` started, by what they run."""
    found = {}
    for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        found["actions" if "rasa_sdk" in cmdline else "rasa"] = int(child)
    return found


def test_hotline_run_restarts_a_dead_action_server_then_exits_1_when_it_keeps_dying(tmp_path: Path) -> None:
    port, rasa_port, action_port = free_port(), free_port(), free_port()
    env = {**os.environ, "HOTLINE_PORT": str(port), "HOTLINE_HOST": "127.0.0.1", "HOTLINE_API_TOKEN": "run-test",
           "HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'run.db'}"}
    run = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--rasa-port", str(rasa_port), "--action-port",
         str(action_port), "--max-restarts", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    health = f"http://127.0.0.1:{port}/healthz"
    try:
        wait_http(health, 300, run)
        first = children(run.pid)["actions"]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: children(run.pid).get("actions", first) != first, 30)  # started again
        wait_until(lambda: _json(health).get("action_server") == "up", 120)
        os.kill(children(run.pid)["actions"], signal.SIGKILL)  # dies again at once: the second in a row
        assert run.wait(60) == 1
        assert "action server kept dying" in run.stderr.read().decode()  # type: ignore[union-attr]
    finally:
        if run.poll() is None:
            run.terminate()
            run.wait(30)


def _json(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())
    except OSError:
        return {}
