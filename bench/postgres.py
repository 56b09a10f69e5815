"""A throwaway PostgreSQL cluster for the benchmarks and tests (gateway.cluster starts it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from gateway.cluster import postgres as postgres_server
from gateway.cluster import postgres_available as available

__all__ = ["available", "postgres"]


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """The URL of a fresh cluster's `postgres` database, removed on exit."""
    with postgres_server() as server:
        yield server.url()
