"""Database engine and sessions; the schema is created and upgraded by Alembic, never by create_all."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")


def _sqlite_file(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")


def _sqlite_timeout(url: URL) -> float:
    """How long a SQLite writer waits for another's lock: 30 s, or the URL's `?timeout=` (tests of a
    locked database should not wait half a minute)."""
    return float(url.query.get("timeout", 30))  # type: ignore[arg-type]


def make_engine(url: str) -> AsyncEngine:
    sqlite = make_url(url).get_backend_name() == "sqlite"
    # A SQLite file has no server connection to go stale: no pre-ping round trip on every checkout.
    kwargs: dict[str, object] = (
        {"connect_args": {"timeout": _sqlite_timeout(make_url(url))}, "pool_use_lifo": True}
        if sqlite else {"pool_pre_ping": True}
    )
    # Errors never quote their SQL parameters (a citizen's phone, ID number, words) into logs.
    engine = create_async_engine(url, hide_parameters=True, **kwargs)
    if _sqlite_file(make_url(url)):
        event.listen(engine.sync_engine, "connect", _sqlite_wal)
    return engine


def _sqlite_wal(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API objects
    """Write-ahead log: readers never block the writer and a commit costs one fsync of the log
    instead of journal + database (synchronous stays FULL, so still durable)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def make_sessions(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


async def in_session(sessions: async_sessionmaker[AsyncSession], work: Callable[[Session], T]) -> T:
    """A unit of work through an AsyncSession (any database), for callers that hold only sessions."""
    async with sessions() as session:
        result = await session.run_sync(work)
        await session.commit()
        return result


class UnitOfWork:
    """Runs a function of a (sync) Session as one transaction: committed when it returns, rolled
    back when it raises.

    Why: on aiosqlite every statement is several round trips to the driver's thread, which cost far
    more than the SQL itself. On a SQLite file the whole
    function runs in one hop on a thread of its own with the standard driver, and its transactions
    never wait for each other's locks there. On a server database (PostgreSQL) the same function
    runs in an AsyncSession through `run_sync`: one code path, written once as plain ORM code.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._sync: sessionmaker[Session] | None = None
        self._thread: ThreadPoolExecutor | None = None
        engine: AsyncEngine = sessions.kw["bind"]
        if _sqlite_file(engine.url):
            sync_engine = create_engine(
                engine.url.set(drivername="sqlite"), connect_args={"timeout": _sqlite_timeout(engine.url)},
                hide_parameters=True,
            )
            event.listen(sync_engine, "connect", _sqlite_wal)
            self._sync = sessionmaker(sync_engine, expire_on_commit=False)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-unit-of-work")

    async def __call__(self, work: Callable[[Session], T]) -> T:
        if self._sync is None or self._thread is None:
            return await in_session(self.sessions, work)
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, work)

    def _run(self, work: Callable[[Session], T]) -> T:
        assert self._sync is not None
        with self._sync() as session, session.begin():
            return work(session)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._sync is not None:
            self._sync.kw["bind"].dispose()
