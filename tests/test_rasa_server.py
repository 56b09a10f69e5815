"""Rasa's check of the action server's answers, made cheaper in bot/rasa_server.py, still accepts and
rejects exactly what Rasa's own check does (run in the bot's venv, where Rasa is)."""

import json
import subprocess

from gateway.botproc import bot_bin, bot_env
from gateway.config import ROOT

ANSWERS = [
    {"events": [{"event": "slot", "name": "phone", "value": None}], "responses": []},
    {"events": [{"event": "slot", "name": "phone", "value": "13800001234", "timestamp": None}]},
    {"events": [{"event": "active_loop", "name": "intake_form"}, {"event": "followup", "name": "action_listen"}],
     "responses": [{"response": "utter_ask_phone"}]},
    {"events": [{"event": "bot", "text": "您好", "data": {}, "metadata": {}}]},
    {"events": [{"event": "user", "text": "你好", "parse_data": {"intent": {"name": "greet", "confidence": 1.0}}}]},
    {"events": []},
    {},
    # Invalid: a slot without its value, a name that is not text, an unknown event, no event at all,
    # events that are not a list, a response that is not an object, a user text that is a number.
    {"events": [{"event": "slot", "name": "phone"}]},
    {"events": [{"event": "slot", "name": 3, "value": 1}]},
    {"events": [{"event": "no_such_event"}]},
    {"events": [{"name": "phone", "value": 1}]},
    {"events": "slot"},
    {"responses": [1]},
    {"events": [{"event": "user", "text": 5}]},
    [],
]

CHECK = """
import json, sys
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction
from bot import rasa_server

answers = json.loads(sys.stdin.read())
out = []
for answer in answers:
    verdicts = []
    for check in (RemoteAction("a", None)._validate_action_result, lambda r: rasa_server.validate_action_result(None, r)):
        try:
            verdicts.append(check(answer))
        except ValidationError as error:
            verdicts.append(error.message)
    out.append(verdicts)
print(json.dumps(out))
"""


def test_cheaper_check_of_action_answers_agrees_with_rasa() -> None:
    result = subprocess.run([str(bot_bin("python")), "-c", CHECK], input=json.dumps(ANSWERS), cwd=ROOT,
                            env=bot_env(), capture_output=True, text=True, timeout=300, check=True)
    verdicts = json.loads(result.stdout.strip().splitlines()[-1])
    assert [rasa for rasa, _ in verdicts].count(True) == 7  # the valid ones above, by Rasa's own check
    for (rasa, ours), answer in zip(verdicts, ANSWERS, strict=True):
        assert rasa == ours, answer


EVENTS_CHECK = """
import json
from rasa.shared.core.events import Event
from rasa.shared.utils.common import all_subclasses
from bot import rasa_server

names = sorted({cls.type_name for cls in all_subclasses(Event)}) + ["topic", "no_such_event"]
default = all_subclasses(Event)[0]

def verdicts():
    out = []
    for name in names:
        for args in ((name,), (name, default)):
            try:
                out.append(repr(Event.resolve_by_type(*args)))
            except ValueError as error:
                out.append("ValueError: " + str(error))
    return out

rasa = verdicts()
rasa_server.install()
print(json.dumps([len(names), rasa, verdicts(), Event.resolve_by_type.__module__]))
"""


def test_event_classes_by_table_resolve_as_rasa_does() -> None:
    """Every event type name, "topic", an unknown name, with and without a default: Rasa's lookup
    and the table give the same class, None or error."""
    result = subprocess.run([str(bot_bin("python")), "-c", EVENTS_CHECK], cwd=ROOT,
                            env=bot_env(), capture_output=True, text=True, timeout=300, check=True)
    count, rasa, ours, resolver = json.loads(result.stdout.strip().splitlines()[-1])
    assert resolver == "bot.rasa_server"  # the table is what Rasa now uses
    assert count > 20 and "SlotSet" in " ".join(rasa) and "ValueError: Unknown event name 'no_such_event'." in rasa
    assert ours == rasa


FAILING_STORE = """
import asyncio
from rasa.core.tracker_store import FailSafeTrackerStore, InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from bot import rasa_server


class Unreachable(InMemoryTrackerStore):
    async def retrieve(self, sender_id):
        raise ConnectionError("the database is restarting")


async def read():
    try:
        tracker = await FailSafeTrackerStore(Unreachable(Domain.empty())).retrieve("citizen")
    except ConnectionError:
        return "failed"
    return "empty" if tracker is None else "tracker"

print(asyncio.run(read()))
rasa_server.install()
print(asyncio.run(read()))
"""


def test_an_unreadable_tracker_store_fails_the_turn_instead_of_starting_afresh() -> None:
    """Rasa's own store answers an unreadable tracker as a new conversation (a citizen mid-form got no
    work order when PostgreSQL restarted); with bot/rasa_server.py the turn fails and is retried."""
    out = subprocess.run([str(bot_bin("python")), "-c", FAILING_STORE], cwd=ROOT, env=bot_env(),
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert out == ["empty", "failed"], out


PARSE_ARGS = """
import json, sys
from rasa.__main__ import create_argument_parser
args = create_argument_parser().parse_args(json.loads(sys.stdin.read()))
print(args.auth_token)
"""


def test_a_token_beginning_with_a_dash_reaches_rasa() -> None:
    """Rasa's own parser reads our command line: token_urlsafe gives a token beginning with "-" one
    time in 64, and as a separate argument Rasa refused to start (a CI run's cluster did)."""
    from pathlib import Path

    from gateway.botproc import rasa_command

    token = "-Kx3_secret-token"
    argv = rasa_command(Path("models/m.tar.gz"), 5005, Path("endpoints.yml"), token)
    rasa_args = argv[argv.index("bot.rasa_server") + 1:]
    out = subprocess.run([str(bot_bin("python")), "-c", PARSE_ARGS], input=json.dumps(rasa_args), cwd=ROOT,
                         env=bot_env(), capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip().splitlines()[-1] == token
