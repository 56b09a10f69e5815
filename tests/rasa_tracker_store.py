"""Run with the bot's Python (Rasa 3.6): Rasa's own SQLTrackerStore on SQLite, so the retention
test works on the `events` table as Rasa creates and reads it, not on a copy of its schema.

    python tests/rasa_tracker_store.py save DB SENDER PHONE TIMESTAMP...   one SlotSet per timestamp
    python tests/rasa_tracker_store.py read DB SENDER                      prints the events as JSON
"""

from __future__ import annotations

import asyncio
import json
import sys

from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import SlotSet
from rasa.shared.core.trackers import DialogueStateTracker


async def main(command: str, db: str, sender: str, *rest: str) -> None:
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=db)
    if command == "save":
        phone, stamps = rest[0], [float(t) for t in rest[1:]]
        await store.save(DialogueStateTracker.from_events(sender, [SlotSet("phone", phone, timestamp=t) for t in stamps]))
        return
    tracker = await store.retrieve(sender)
    print(json.dumps([event.as_dict() for event in tracker.events] if tracker else None))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
