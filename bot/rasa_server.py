"""`rasa run` (Rasa's own CLI, unchanged arguments) with the action server's answers checked by a
validator built once.

Rasa 3.6 checks every answer of the action server with `jsonschema.validate`, which first validates
the response schema itself against the JSON Schema meta-schema: under load that check was 2/3 of the
Rasa server's CPU (docs/benchmarks.md, "Where a turn's time goes"). The answers are still validated
against the same schema, with the same error (and the same message Rasa adds to it); only the
schema's own check runs once, at start.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from jsonschema import exceptions
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from rasa.__main__ import main as rasa_main
from rasa.core.actions.action import RemoteAction
from rasa.shared.constants import DOCS_BASE_URL


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


def install() -> None:
    RemoteAction._validate_action_result = validate_action_result  # type: ignore[method-assign]


if __name__ == "__main__":  # python -m bot.rasa_server run --enable-api -m ...
    install()
    sys.argv[0] = "rasa"
    rasa_main()
