"""Answering accepted messages (WeChat pushes, SMS uplinks) after their acknowledgement, a few
conversations at a time.

A channel that must acknowledge at once keeps the message (`Router.accept`), answers the provider,
and submits the conversation here. A small fixed set of workers take conversations in the order they
came and let the router answer them. A task per conversation would, under a burst, put fifty
conversations' database steps in front of every later acknowledgement on the one event loop; with
a few workers the loop stays free for acknowledgements, and
throughput is unchanged because the bot admits a few messages at a time anyway (`RasaClient`).

A conversation still queued when the gateway stops is answered after the restart by
`Router.recover_received`: its messages are kept as "received".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from common.messages import Prepare
from gateway.router import Router
from storage.conversations import Conversation

log = logging.getLogger(__name__)

ACK_PRIORITY_S = 0.5  # how long answering waits for a burst of acknowledgements to finish first


class Answering:
    def __init__(self, router: Router, workers: int = 4) -> None:
        self.router = router
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._waiting: dict[int, tuple[Conversation, list[Prepare]]] = {}
        self._workers = [asyncio.create_task(self._work()) for _ in range(max(1, workers))]
        self._acks_in_flight = 0
        self._no_ack_in_flight = asyncio.Event()
        self._no_ack_in_flight.set()

    def submit(self, conv: Conversation, prepare: Prepare | None = None) -> None:
        """Queue a conversation to be answered; `prepare` runs first (e.g. queueing a media fetch).
        A conversation already waiting is not queued twice: one pass answers all its messages."""
        if conv.id in self._waiting:
            if prepare is not None:
                self._waiting[conv.id][1].append(prepare)
            return
        self._waiting[conv.id] = (conv, [prepare] if prepare is not None else [])
        self._queue.put_nowait(conv.id)

    @contextlib.contextmanager
    def acknowledging(self) -> Iterator[None]:
        """Around an acknowledgement: workers hold back while any is in flight (at most ACK_PRIORITY_S)."""
        self._acks_in_flight += 1
        self._no_ack_in_flight.clear()
        try:
            yield
        finally:
            self._acks_in_flight -= 1
            if not self._acks_in_flight:
                self._no_ack_in_flight.set()

    async def _work(self) -> None:
        while True:
            conv_id = await self._queue.get()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_ack_in_flight.wait(), ACK_PRIORITY_S)
            conv, prepares = self._waiting.pop(conv_id)
            try:
                for prepare in prepares:
                    await prepare()
                await self.router.process(conv)
            except Exception:
                log.exception("answering conversation %s failed; its messages are kept and answered on recovery",
                              conv_id)

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
