"""Train, cache and start the bot's processes (Rasa server, action server) from the bot's own venv.

The model is named by a hash of everything that shapes it, so `make run` and the test suite
train only when the training data or the bot's configuration changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.config import ROOT

log = logging.getLogger(__name__)
Proc = subprocess.Popen[bytes]
BOT_VENV = Path(os.environ.get("HOTLINE_BOT_VENV", ROOT / ".venv-bot"))
MODELS = ROOT / "models"
CACHE = Path(os.environ.get("HOTLINE_MODEL_CACHE", Path.home() / ".cache" / "hotline12345" / "models"))
TRAINING_INPUTS = ("bot/config.yml", "bot/domain.yml", "bot/data", "bot/dict", "nlu_data/train", "bot/requirements.txt")


class BotSetupError(RuntimeError):
    """The bot environment is missing or a bot process failed to start."""


def bot_bin(name: str) -> Path:
    path = BOT_VENV / "bin" / name
    if not path.exists():
        raise BotSetupError(f"{path} not found: run `make bootstrap` (creates the Python 3.10 bot venv)")
    return path


def training_hash() -> str:
    digest = hashlib.sha256()
    for item in TRAINING_INPUTS:
        base = ROOT / item
        files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
        for path in files:
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_model(force: bool = False) -> Path:
    """The trained model for the current inputs: from models/, else the user cache, else trained now."""
    name = f"hotline-{training_hash()}"
    target = MODELS / f"{name}.tar.gz"
    cached = CACHE / target.name
    if target.exists() and not force:
        return target
    MODELS.mkdir(parents=True, exist_ok=True)
    if cached.exists() and not force:
        shutil.copy2(cached, target)
        print(f"model {target.name}: reused from {CACHE}", file=sys.stderr, flush=True)
        return target
    print(f"model {target.name}: training (training data or bot config changed; a few minutes on 2 cores)",
          file=sys.stderr, flush=True)
    started = time.monotonic()
    cmd = [
        str(bot_bin("rasa")), "train",
        "--config", "bot/config.yml", "--domain", "bot/domain.yml",
        "--data", "nlu_data/train", "bot/data",
        "--out", str(MODELS), "--fixed-model-name", name,
    ]
    # Progress goes to stderr so that commands printing JSON on stdout (classify) stay clean.
    result = subprocess.run(cmd, cwd=ROOT, env=bot_env(), stdout=sys.stderr)
    if result.returncode != 0 or not target.exists():
        raise BotSetupError(f"rasa train failed with exit code {result.returncode}")
    print(f"model {target.name}: trained in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    shutil.copy2(target, cached)
    return target


def bot_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONHOME"))}
    env.update(
        PYTHONPATH=str(ROOT),
        PATH=f"{BOT_VENV / 'bin'}:{env.get('PATH', '')}",
        TF_CPP_MIN_LOG_LEVEL="2",
        SQLALCHEMY_SILENCE_UBER_WARNING="1",
        RASA_TELEMETRY_ENABLED="false",
        PYTHONWARNINGS="ignore",
    )
    env.update(extra)
    return env


def write_endpoints(path: Path, action_port: int, tracker_db: Path | None) -> Path:
    lines = ["action_endpoint:", f'  url: "http://127.0.0.1:{action_port}/webhook"']
    if tracker_db is not None:
        lines += ["tracker_store:", "  type: SQL", "  dialect: sqlite", f'  db: "{tracker_db}"']
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_cluster_endpoints(
    path: Path, action_port: int, pg_port: int, pg_db: str, redis_port: int, tracker_store: str = "postgresql"
) -> Path:
    """Rasa servers that share conversations: trackers in PostgreSQL (or Redis) and Rasa's RedisLockStore,
    so whichever server a message reaches, one turn per conversation runs at a time on the same tracker.
    Rasa's SQL store runs its queries synchronously inside Rasa's event loop; the Redis store reads and
    writes one key per turn (docs/benchmarks.md compares them)."""
    write_endpoints(path, action_port, None)
    if tracker_store == "redis":
        tracker = ["tracker_store:", "  type: redis", "  url: 127.0.0.1", f"  port: {redis_port}", "  db: 2",
                   "  key_prefix: hotline"]
    else:
        tracker = ["tracker_store:", "  type: SQL", "  dialect: postgresql", "  url: 127.0.0.1", f"  port: {pg_port}",
                   "  username: postgres", f"  db: {pg_db}"]
    with path.open("a", encoding="utf-8") as out:
        out.write("\n".join([
            *tracker,
            "lock_store:", "  type: redis", "  url: 127.0.0.1", f"  port: {redis_port}", "  db: 1",
            "  key_prefix: hotline",
        ]) + "\n")
    return path


def start_action_server(port: int, log_file: Path | None = None, workers: int = 1) -> subprocess.Popen[bytes]:
    """rasa_sdk's server, bound to loopback only (its default would be 0.0.0.0).

    `workers` > 1: rasa_sdk forks that many Sanic worker processes sharing the one port
    (ACTION_SERVER_SANIC_WORKERS), since Rasa names a single action endpoint. The Popen
    is their parent; stopping it stops them.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out = open(log_file, "ab") if log_file else None  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(bot_bin("python")), "-m", "rasa_sdk", "--actions", "bot.actions", "--port", str(port)],
        cwd=ROOT, env=bot_env(SANIC_HOST="127.0.0.1", ACTION_SERVER_SANIC_WORKERS=str(workers)),
        stdout=out, stderr=subprocess.STDOUT if out else None,
    )


def rasa_command(model: Path, port: int, endpoints: Path, auth_token: str = "") -> list[str]:
    """`rasa run` through bot/rasa_server.py (Rasa's CLI with its per-turn costs cut). The token is
    passed as `--auth-token=…`: a random token may begin with "-", which argparse would take for an
    option and refuse to start."""
    return [
        str(bot_bin("python")), "-m", "bot.rasa_server", "run", "--enable-api", "-m", str(model),
        "-i", "127.0.0.1", "-p", str(port),
        "--endpoints", str(endpoints), "--credentials", "bot/credentials.yml",
        *([f"--auth-token={auth_token}"] if auth_token else []),
    ]


def start_rasa_server(
    model: Path, port: int, endpoints: Path, log_file: Path | None = None, auth_token: str = ""
) -> subprocess.Popen[bytes]:
    """`auth_token`: Rasa's HTTP API (trackers, parse) then answers only calls that carry it."""
    out = open(log_file, "ab") if log_file else None  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        rasa_command(model, port, endpoints, auth_token),
        cwd=ROOT, env=bot_env(), stdout=out, stderr=subprocess.STDOUT if out else None,
    )


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until `url` answers 200 (Rasa needs ~1 minute to load TensorFlow and the model)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BotSetupError(f"{url}: process exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise BotSetupError(f"{url} did not answer within {timeout_s:.0f}s")


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Part:
    """A process of the service (bot, gateway, Redis): started by `launch` on a fixed port, so it comes back where it was."""

    name: str
    port: int
    launch: Callable[[], Proc]
    ready: Callable[[Proc], None]
    proc: Proc | None = None

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = self.launch()
        self.ready(self.proc)

    def kill(self) -> None:
        """kill -9: no shutdown hook runs, as when the machine loses power."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        stop(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()




class Supervisor:
    """Brings dead processes back (`hotline run`): a part that exits is started again after a
    backoff doubling from `base_s` up to `cap_s`; after `max_restarts` restarts in a row without
    `stable_s` of uptime in between, `on_give_up` is called (the service exits non-zero rather than
    telling every citizen the bot is busy forever). Messages wait in the database meanwhile."""

    def __init__(
        self, parts: list[Part], on_give_up: Callable[[Part], None], *, max_restarts: int = 5,
        base_s: float = 1.0, cap_s: float = 60.0, stable_s: float = 120.0, poll_s: float = 1.0,
    ) -> None:
        self.parts, self.on_give_up = parts, on_give_up
        self.max_restarts, self.base_s, self.cap_s, self.stable_s, self.poll_s = (
            max_restarts, base_s, cap_s, stable_s, poll_s)
        self.restarts: dict[str, int] = dict.fromkeys((p.name for p in parts), 0)
        self.gave_up: Part | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def delay_s(self, restart: int) -> float:
        """The wait before the `restart`-th restart in a row (1-based)."""
        return min(self.cap_s, self.base_s * 2 ** (restart - 1))

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        started = {p.name: time.monotonic() for p in self.parts}
        in_a_row = dict.fromkeys(started, 0)
        while not self._stop.wait(self.poll_s):
            for part in self.parts:
                if part.proc is None or part.proc.poll() is None:
                    continue
                if time.monotonic() - started[part.name] >= self.stable_s:
                    in_a_row[part.name] = 0
                in_a_row[part.name] += 1
                if in_a_row[part.name] > self.max_restarts:
                    log.error("%s exited %d times in a row; giving up", part.name, self.max_restarts + 1)
                    self.gave_up = part
                    self.on_give_up(part)
                    return
                delay = self.delay_s(in_a_row[part.name])
                log.warning("%s exited with code %s; starting it again in %.0fs", part.name,
                            part.proc.returncode, delay)
                if self._stop.wait(delay):
                    return
                started[part.name] = time.monotonic()
                self.restarts[part.name] += 1
                try:
                    part.start()
                except BotSetupError as exc:  # it died again while starting: the next pass counts it
                    log.warning("%s did not come back: %s", part.name, exc)


def exit_service(part: Part) -> None:
    """`on_give_up` for a service process: stop it (SIGTERM to ourselves) as an operator would."""
    os.kill(os.getpid(), signal.SIGTERM)


def free_port() -> int:
    """A loopback port nothing listens on right now, for the bot's processes and test servers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def bot_servers(
    rasa_port: int, action_port: int, tracker_db: Path | None, logs: Path | None, auth_token: str = "",
    supervise: Callable[[Part], None] | None = None, max_restarts: int = 5,
) -> Iterator[str]:
    """Start the action server and the Rasa server on loopback; stop both on exit (`hotline run`,
    `hotline classify` and the test suite). `supervise`: restart either when it dies, and call
    this when one keeps dying (see Supervisor)."""
    model = ensure_model()
    endpoints = write_endpoints(ROOT / "var" / f"endpoints-{rasa_port}.yml", action_port, tracker_db)
    actions = Part("action server", action_port,
                   lambda: start_action_server(action_port, logs / "actions.log" if logs else None),
                   lambda proc: wait_http(f"http://127.0.0.1:{action_port}/health", 120, proc))
    rasa = Part("rasa", rasa_port,
                lambda: start_rasa_server(model, rasa_port, endpoints, logs / "rasa.log" if logs else None, auth_token),
                lambda proc: wait_http(f"http://127.0.0.1:{rasa_port}/", 300, proc))
    try:
        actions.proc, rasa.proc = actions.launch(), rasa.launch()
        print("starting the bot (Rasa loads TensorFlow and the model: about a minute)...", flush=True)
        actions.ready(actions.proc)
        rasa.ready(rasa.proc)
        with Supervisor([actions, rasa], supervise, max_restarts=max_restarts) if supervise else contextlib.nullcontext():
            yield f"http://127.0.0.1:{rasa_port}"
    finally:
        rasa.stop()
        actions.stop()


if __name__ == "__main__":  # `python -m gateway.botproc` trains the model if needed
    print(ensure_model(force="--force" in sys.argv))
