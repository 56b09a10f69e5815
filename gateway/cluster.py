"""The production shape on one machine: gateway replicas, Rasa servers sharing a PostgreSQL tracker
store and Rasa's RedisLockStore, one action server, redis-server and PostgreSQL (Debian packages).

Used by the fault-matrix tests (tests/test_faults.py), the scale-out benchmarks and operators
rehearsing a deployment (`hotline cluster`). Every part can be killed, stopped and started again
on the same port, so a test can take one away mid-conversation and bring it back.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.botproc import (
    BotSetupError,
    Part,
    Proc,
    ensure_model,
    free_port,
    start_action_server,
    start_rasa_server,
    wait_http,
    write_cluster_endpoints,
)
from gateway.config import ROOT

CLUSTER_TOKEN = "cluster-token-local-only"  # noqa: S105 - the parts bind 127.0.0.1 only


def wait_port(port: int, timeout_s: float, proc: Proc | None = None) -> None:
    """Block until something accepts connections on the loopback port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BotSetupError(f"port {port}: process exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BotSetupError(f"nothing listens on port {port} after {timeout_s:.0f}s")


class RedisServer(Part):
    """redis-server (Debian package) on loopback, no persistence: a restart loses every key, the
    worst case for the gateway's claims and locks."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BotSetupError("redis-server is not installed (Debian package redis-server)")
        port = port or free_port()
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        super().__init__("redis", port, lambda: subprocess.Popen(cmd, stdout=subprocess.DEVNULL),
                         lambda proc: wait_port(port, 10, proc))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def postgres_available() -> bool:
    """Debian's PostgreSQL binaries, and root to run them as the postgres user (initdb refuses root)."""
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")) and os.geteuid() == 0 and shutil.which("runuser") is not None


class PostgresServer:
    """A throwaway PostgreSQL cluster on a loopback port, with fsync on (Debian's binaries, run as
    the postgres user). `stop`/`start` keep the data: a restart, not a new database."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins or shutil.which("runuser") is None:
            raise BotSetupError("no PostgreSQL binaries under /usr/lib/postgresql")
        self.bin = bins[-1]
        self.dir = Path(tempfile.mkdtemp(prefix="hotline-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self._as_pg = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self._as_pg, f"{self.bin}/initdb", "-D", str(self.dir / "db"), "-A", "trust",
                        "-U", "postgres"], check=True, stdout=subprocess.DEVNULL)

    def _ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run([*self._as_pg, f"{self.bin}/pg_ctl", "-D", str(self.dir / "db"), *args],
                       check=check, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on "
                  "-c max_connections=200", "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is PostgreSQL's crash: no checkpoint, recovery from the WAL at the next start."""
        self._ctl("-m", mode, "stop", check=False)

    def create_database(self, name: str) -> str:
        subprocess.run([*self._as_pg, f"{self.bin}/createdb", "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "postgres", name], check=True)
        return self.url(name)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


def gateway_env(database_url: str, redis_url: str, rasa_urls: list[str], port: int, secrets_: dict[str, str],
                **extra: str) -> dict[str, str]:
    """`secrets_`: Rasa's auth token and the tracker-key secret, the same for every replica (a replica
    with its own tracker key would give each citizen a second Rasa conversation)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update(
        HOTLINE_DATABASE_URL=database_url, HOTLINE_REDIS_URL=redis_url, **secrets_,
        HOTLINE_RASA_URL=",".join(rasa_urls), HOTLINE_HOST="127.0.0.1", HOTLINE_PORT=str(port),
        HOTLINE_API_TOKEN=CLUSTER_TOKEN, HOTLINE_CONSOLE_SECRET="cluster-console-secret-local-only",
        **extra,
    )
    return env


@dataclass
class Cluster:
    postgres: PostgresServer
    redis: RedisServer
    actions: Part
    rasa: list[Part]
    gateways: list[Part]
    logs: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def gateway_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{g.port}" for g in self.gateways]

    @property
    def rasa_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{r.port}" for r in self.rasa]

    @property
    def database_url(self) -> str:
        return self.postgres.url("hotline")

    @property
    def api_token(self) -> str:
        return CLUSTER_TOKEN


def _gateway_part(name: str, port: int, env: dict[str, str], log: Path) -> Part:
    def launch() -> Proc:
        out = open(log, "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)

    return Part(name, port, launch, lambda proc: wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc))


@contextlib.contextmanager
def start_cluster(
    gateways: int = 2, rasa: int = 2, actions: int = 1, logs: Path | None = None, tracker_store: str = "postgresql",
    **gateway_settings: str,
) -> Iterator[Cluster]:
    """Start every part on loopback, wait until each answers, stop them all on exit.
    `actions`: action server worker processes; Rasa names a single action_endpoint, so they share
    one port (rasa_sdk's ACTION_SERVER_SANIC_WORKERS).
    `gateway_settings`: extra HOTLINE_* variables for the gateways (e.g. HOTLINE_RETRY_INTERVAL_S)."""
    if actions < 1:
        raise ValueError(f"at least one action worker, got {actions}")
    logs = logs or ROOT / "var" / "cluster"
    logs.mkdir(parents=True, exist_ok=True)
    model = ensure_model()
    started: list[Part] = []
    with postgres() as pg:
        redis = RedisServer()
        try:
            redis.start()
            started.append(redis)
            pg.create_database("rasa")
            database_url = pg.create_database("hotline")
            action_port = free_port()
            action = Part("actions", action_port,
                          lambda: start_action_server(action_port, logs / "actions.log", workers=actions),
                          lambda proc: wait_http(f"http://127.0.0.1:{action_port}/health", 120, proc))
            endpoints = write_cluster_endpoints(logs / "endpoints.yml", action_port, pg.port, "rasa", redis.port,
                                                tracker_store)
            shared = {"HOTLINE_RASA_TOKEN": secrets.token_urlsafe(24), "HOTLINE_TRACKER_SECRET": secrets.token_hex(32)}
            servers = [_rasa_part(f"rasa{i + 1}", model, endpoints, logs, shared["HOTLINE_RASA_TOKEN"])
                       for i in range(rasa)]
            for part in (action, *servers):  # launched together: each loads TensorFlow for about a minute
                part.proc = part.launch()
                started.append(part)
            for part in (action, *servers):
                assert part.proc is not None
                part.ready(part.proc)
            rasa_urls = [f"http://127.0.0.1:{p.port}" for p in servers]
            replicas = []
            for i in range(gateways):
                port = free_port()
                env = gateway_env(database_url, redis.url, rasa_urls, port, shared, **gateway_settings)
                replicas.append(_gateway_part(f"gateway{i + 1}", port, env, logs / f"gateway{i + 1}.log"))
            for part in replicas:  # one at a time: each migrates the database at start
                part.start()
                started.append(part)
            yield Cluster(pg, redis, action, servers, replicas, logs)
        finally:
            for part in reversed(started):
                part.stop()


def _rasa_part(name: str, model: Path, endpoints: Path, logs: Path, token: str) -> Part:
    port = free_port()
    return Part(name, port, lambda: start_rasa_server(model, port, endpoints, logs / f"{name}.log", token),
                lambda proc: wait_http(f"http://127.0.0.1:{port}/", 300, proc))


def main(gateways: int, rasa: int, actions: int = 1) -> int:
    """`hotline cluster`: start the shape, print where each part listens, run until Ctrl-C."""
    with start_cluster(gateways=gateways, rasa=rasa, actions=actions) as cluster:
        print("\n".join([
            *(f"  gateway      {url}" for url in cluster.gateway_urls),
            *(f"  rasa         {url}" for url in cluster.rasa_urls),
            f"  actions      http://127.0.0.1:{cluster.actions.port} ({actions} worker(s))",
            f"  redis        {cluster.redis.url}",
            f"  postgresql   {cluster.database_url} (Rasa's tracker: database rasa)",
            f"  API token    {cluster.api_token}   logs: {cluster.logs}",
            "  Ctrl-C stops everything.",
        ]), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0
