"""Prometheus metrics for the operators: traffic per channel, how long a turn takes and how much of
it is the bot, work orders, deliveries. `GET /metrics` serves them behind the API's bearer token
(the gateway is the public entry; a scrape job sends `Authorization: Bearer …`).

Each app has its own registry, so several gateways in one process (tests) never share counters.
Labels are channels, categories and outcomes only: never a sender, a phone or a message.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# From a fast web turn (a few ms of our own work) to a bot that times out (30 s).
# A citizen's wait for a person, and how long an agent holds a chat: seconds to an hour.
_HUMAN_SECONDS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600)
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter("hotline_inbound_messages", "Messages kept from citizens, by channel",
                                ["channel"], registry=r)
        self.duplicates = Counter("hotline_duplicate_messages", "Provider retries answered without processing again",
                                  ["channel"], registry=r)
        self.turn_seconds = Histogram(
            "hotline_turn_seconds", "From taking a message in to its replies being stored, bot included",
            ["channel"], buckets=_SECONDS, registry=r)
        self.bot_seconds = Histogram("hotline_bot_seconds", "The bot's share of a turn: waiting for a slot and answering",
                                     buckets=_SECONDS, registry=r)
        self.bot_unavailable = Counter("hotline_bot_unavailable", "Messages kept because the bot did not answer",
                                       registry=r)
        self.failed = Counter("hotline_failed_messages",
                              "Messages that raised MAX_ATTEMPTS times while answered, set aside as failed",
                              ["channel"], registry=r)
        self.work_orders = Counter("hotline_work_orders", "Intakes handed to the work-order backend, by outcome",
                                   ["profile", "category", "outcome"], registry=r)
        self.screened = Counter("hotline_screened", "First messages referred elsewhere (emergency, legal procedure…)",
                                ["profile", "reason"], registry=r)
        self.deliveries = Counter("hotline_outbox_attempts", "Outbox delivery attempts, by channel and outcome",
                                  ["channel", "outcome"], registry=r)
        self.queue_length = Gauge("hotline_queue_length", "Conversations waiting for a person (set by the queue sweep)",
                                  registry=r)
        self.wait_seconds = Histogram("hotline_queue_wait_seconds",
                                      "From joining the queue to a claim or a callback order", buckets=_HUMAN_SECONDS,
                                      registry=r)
        self.handle_seconds = Histogram("hotline_handle_seconds", "From an agent's claim to release or close",
                                        buckets=_HUMAN_SECONDS, registry=r)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


METRICS = web.AppKey("metrics", Metrics)
