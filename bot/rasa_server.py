"""`rasa run` (Rasa's own CLI, unchanged arguments) with three costs of each turn cut: the
action server's answers checked by a validator built once, one pool of kept-alive connections, and
an event's class found by its type name in a table instead of a walk over all Event subclasses.

Rasa 3.6 checks every answer of the action server with `jsonschema.validate`, which first validates
the response schema itself against the JSON Schema meta-schema: under load that check was 2/3 of the
Rasa server's CPU (docs/benchmarks.md, "Where a turn's time goes"). The answers are still validated
against the same schema, with the same error (and the same message Rasa adds to it); only the
schema's own check runs once, at start.

Rasa also opens a new HTTP session, so a new TCP connection, for every call to the action server:
6 % of its CPU on a form turn. Here the sessions share one connection pool. A connection idle
for 2 s is closed by us before the action server (sanic: 5 s) can close it under a request.

Rasa finds the class of every event it reads (from the action server, from the tracker store) by
listing all Event subclasses anew (`Event.resolve_by_type`): 0.027 ms each, some 8 % of Rasa's CPU on
first turns. Here the first listing is kept as a table; a name not in it goes to Rasa's own lookup,
so a subclass imported later, "topic", a default and the error for an unknown name are as before.

One behaviour is changed on purpose: when the tracker store cannot be read (PostgreSQL restarting),
Rasa's FailSafeTrackerStore answers from an empty tracker, so a citizen halfway through the form was
answered as a new conversation and got no work order (tests/test_faults.py, PostgreSQL restarted).
Here the read fails instead: Rasa's REST channel then answers nothing, which the gateway takes as
"bot unavailable", keeps the message and asks again once the store is back.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import aiohttp
from jsonschema import exceptions
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from rasa.__main__ import main as rasa_main
from rasa.core.actions.action import RemoteAction
from rasa.core.tracker_store import FailSafeTrackerStore
from rasa.shared.constants import DOCS_BASE_URL
from rasa.shared.core.events import Event
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.utils.common import all_subclasses
from rasa.utils.endpoints import DEFAULT_REQUEST_TIMEOUT, EndpointConfig


@functools.cache
def action_response_validator() -> Validator:
    schema = RemoteAction.action_response_format_spec()
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@functools.cache
def split_validators() -> tuple[Validator, dict[str, Validator]]:
    """The same schema in parts: the answer without its events' items, and one validator per event
    type. Every event schema in Rasa's `oneOf` is told apart by its `event` constant, so an event is
    valid against the `oneOf` exactly when it is valid against its own type's schema; checking it
    against all 23 was a sixth of Rasa's CPU on a first message."""
    schema = RemoteAction.action_response_format_spec()
    cls = validator_for(schema)
    events = schema["properties"]["events"]
    items = events["items"]
    outer = {**schema, "properties": {**schema["properties"], "events": {k: v for k, v in events.items() if k != "items"}}}
    common = {k: v for k, v in items.items() if k != "oneOf"}
    by_type = {alt["properties"]["event"]["const"]: cls({**common, "allOf": [alt]}) for alt in items["oneOf"]}
    return cls(outer), by_type


def is_valid_action_result(result: Any) -> bool:
    outer, by_type = split_validators()
    if not outer.is_valid(result):
        return False
    for event in result.get("events") or []:
        validator = by_type.get(event.get("event")) if isinstance(event, dict) else None
        if validator is None or not validator.is_valid(event):
            return False
    return True


def validate_action_result(self: RemoteAction, result: dict[str, Any]) -> bool:
    """RemoteAction._validate_action_result, the schema checked once and each event against its own
    type; an invalid answer is checked again as Rasa does, for Rasa's own error and message."""
    if is_valid_action_result(result):
        return True
    error = exceptions.best_match(action_response_validator().iter_errors(result))
    if error is not None:
        error.message += (
            ". Failed to validate Action server response from API, make sure your response from the Action "
            f"endpoint is valid. For more information about the format visit {DOCS_BASE_URL}/custom-actions"
        )
        raise error
    return True


@functools.cache
def event_classes() -> dict[str, type[Event]]:
    """Type name → the first class Rasa's lookup would return for it (all_subclasses' order)."""
    table: dict[str, type[Event]] = {}
    for cls in all_subclasses(Event):
        table.setdefault(cls.type_name, cls)
    return table


_rasa_resolve_by_type = Event.resolve_by_type


def resolve_by_type(type_name: str, default: type[Event] | None = None) -> type[Event] | None:
    """Event.resolve_by_type from the table; anything not in it is left to Rasa's own lookup."""
    found = event_classes().get(type_name)
    return found if found is not None else _rasa_resolve_by_type(type_name, default)


_pool: aiohttp.TCPConnector | None = None


def pooled_session(self: EndpointConfig) -> aiohttp.ClientSession:
    """EndpointConfig.session on a shared connector: closing the session leaves the pool open."""
    global _pool
    if _pool is None or _pool.closed:
        _pool = aiohttp.TCPConnector(limit=100, keepalive_timeout=2)
    auth = aiohttp.BasicAuth(self.basic_auth["username"], self.basic_auth["password"]) if self.basic_auth else None
    return aiohttp.ClientSession(headers=self.headers, auth=auth, connector=_pool, connector_owner=False,
                                 timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT))


async def retrieve_or_fail(self: FailSafeTrackerStore, sender_id: str) -> DialogueStateTracker | None:
    """FailSafeTrackerStore.retrieve without its fallback to an empty conversation."""
    return await self._tracker_store.retrieve(sender_id)


def install() -> None:
    RemoteAction._validate_action_result = validate_action_result  # type: ignore[method-assign]
    EndpointConfig.session = pooled_session  # type: ignore[method-assign]
    Event.resolve_by_type = staticmethod(resolve_by_type)  # type: ignore[method-assign,assignment]
    FailSafeTrackerStore.retrieve = retrieve_or_fail  # type: ignore[method-assign]


if __name__ == "__main__":  # python -m bot.rasa_server run --enable-api -m ...
    install()
    sys.argv[0] = "rasa"
    rasa_main()
