"""Tables moved to the packages that own them without a schema change: Alembic's autogenerate
compares the migrated database with the models' metadata and finds nothing to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from bench.postgres import available as postgres_available
from bench.survey_default import postgres
from gateway.schema import METADATA, MODELS, migrate


async def differences(url: str) -> list[object]:
    """What `alembic revision --autogenerate` would write for this database (types compared too)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), METADATA)
            )
    finally:
        await engine.dispose()


def test_every_model_shares_the_one_metadata() -> None:
    assert {model.__table__.name for model in MODELS} == set(METADATA.tables)


async def test_the_migrated_sqlite_schema_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}"
    await migrate(url)
    assert await differences(url) == []


@pytest.mark.skipif(not postgres_available(), reason="needs Debian's postgresql binaries and root")
async def test_the_migrated_postgres_schema_matches_the_models() -> None:
    with postgres() as url:
        await migrate(url)
        assert await differences(url) == []
