"""Real components for the suite: Rasa server + action server (model trained once, cached by hash),
redis-server on a free loopback port, a fresh SQLite database per test, and the local WeChat API server."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import ROUTER, create_app
from gateway.botproc import bot_servers, free_port
from gateway.cluster import RedisServer
from gateway.config import ROOT, Settings
from gateway.logs import RUNNER_OPTIONS
from gateway.schema import migrate
from storage.db import make_engine, make_sessions
from tests.wechat_api_server import SlowBot, WeChatAPIServer, api_server

LOGS = ROOT / "var" / "test-logs"


@pytest.fixture(scope="session")
def rasa_url() -> Iterator[str]:
    """A real Rasa server and action server for the whole run (started once: ~1 minute)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with bot_servers(free_port(), free_port(), None, LOGS) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server (Debian package) on a free loopback port, no persistence."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run the tests with `make test`, which installs it")
    server = RedisServer()
    server.start()
    yield server.url
    server.stop()


def settings_for(tmp_path: Path, rasa_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}",
        "rasa_url": rasa_url,
        "api_token": "test-token",
        "retry_interval_s": 3600.0,  # tests drive retries explicitly
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def gateway_client(
    settings: Settings, clock: Clock | None = None, *, background: bool = True
) -> AsyncIterator[TestClient]:
    """The app on a test server; `clock`: the one time its router, outbox and survey read;
    `background=False`: no timer loops, the test drives every pass."""
    options = {"clock": clock} if clock is not None else {}
    server = TestServer(create_app(settings, background=background, **options))
    await server.start_server(**RUNNER_OPTIONS)  # the production access log (no query strings)
    client = TestClient(server)
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def gateway(tmp_path: Path, rasa_url: str) -> AsyncIterator[TestClient]:
    async with gateway_client(settings_for(tmp_path, rasa_url)) as client:
        yield client


@pytest.fixture
async def offline_gateway(tmp_path: Path) -> AsyncIterator[TestClient]:
    """A gateway whose bot address has nothing listening: input checks and outage behaviour."""
    async with gateway_client(settings_for(tmp_path, f"http://127.0.0.1:{free_port()}")) as client:
        yield client


class Chat:
    """A citizen talking to the gateway's REST webhook."""

    def __init__(self, client: TestClient, sender: str) -> None:
        self.client, self.sender, self.n = client, sender, 0

    async def say(self, text: str, message_id: str | None = None) -> list[dict[str, object]]:
        self.n += 1
        body = {"sender": self.sender, "message": text, "message_id": message_id or f"{self.sender}-{self.n}"}
        resp = await self.client.post("/webhooks/rest/webhook", json=body)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    @staticmethod
    def text(replies: list[dict[str, object]]) -> str:
        return "\n".join(str(r["text"]) for r in replies)


async def metrics(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The gateway's /metrics as {(sample name, sorted labels): value}, read as Prometheus would."""
    from prometheus_client.parser import text_string_to_metric_families

    resp = await client.get("/metrics", headers={"Authorization": "Bearer test-token"})
    assert resp.status == 200 and resp.content_type == "text/plain"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(await resp.text()) for s in family.samples}


def router_of(client: TestClient):  # noqa: ANN201 - the Router
    app: web.Application = client.server.app
    return app[ROUTER]


@pytest.fixture
def chat_factory():  # noqa: ANN201
    return Chat



class Clock:
    """Time the code under test reads, moved by the test instead of slept through."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
async def sessions(tmp_path: Path):  # noqa: ANN201 - an async_sessionmaker
    """Sessions on a fresh, migrated SQLite file, for tests of the backend without the HTTP app."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'backend.db'}"
    await migrate(url)
    engine = make_engine(url)
    yield make_sessions(engine)
    await engine.dispose()


@pytest.fixture
async def bot() -> AsyncIterator[tuple[SlowBot, str]]:
    """A stand-in speaking Rasa's REST webhook, with a settable delay; yields it and its URL."""
    stand_in = SlowBot()
    runner, url = await stand_in.start()
    yield stand_in, url
    await runner.cleanup()


@pytest.fixture
async def wechat_api() -> AsyncIterator[WeChatAPIServer]:
    server = api_server()
    await server.start()
    yield server
    await server.close()
