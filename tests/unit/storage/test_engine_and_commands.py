"""The engine (path, permissions, pragmas), query plans, and the ``db`` commands."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from libervia_cache.storage import Store, migrate
from libervia_cache.storage.aio import aio
from libervia_cache.storage.commands import db
from libervia_cache.storage.engine import default_db_path, default_db_url, prepare_sqlite_file
from libervia_cache.storage.pages import STATEMENTS


def test_default_path_is_the_xdg_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "libervia-cache" / "cache.db"
    assert default_db_url() == f"sqlite+aiosqlite:///{tmp_path}/libervia-cache/cache.db"


def test_database_file_and_directory_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "cache.db"
    prepare_sqlite_file(path)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.sqlite_only
async def test_wal_and_foreign_keys_are_on(store: Store) -> None:
    async def pragmas() -> tuple[object, object]:
        async with store.engine.connect() as connection:
            keys = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar()
            journal = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
        return keys, journal

    assert await aio(pragmas()) == (1, "wal")


@pytest.mark.sqlite_only
@pytest.mark.parametrize("order", sorted(STATEMENTS))
def test_page_queries_are_index_range_scans(store: Store, order: str) -> None:
    assert store._reader is not None
    statements = STATEMENTS[order]
    params = {"node": 1, "low": 0, "high": 10, "key": "x", "ids": "[]"}
    for sql in (statements.header, statements.page_asc, statements.page_desc):
        plan = " | ".join(
            row[-1] for row in store._reader.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        )
        assert "USING INDEX ix_pubsub_items_node_" in plan or "USING COVERING INDEX" in plan
        assert "TEMP B-TREE" not in plan, plan  # never a sort of the whole node
        assert "SCAN pubsub_items" not in plan, plan


def test_db_commands_show_upgrade_and_downgrade(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    head = migrate.head_revision()
    first = migrate.revisions()[0].revision

    result = runner.invoke(db, ["--db-url", url, "current"])
    assert result.exit_code == 1 and "no database at" in result.output
    assert not (tmp_path / "cli.db").exists()  # a read-only command creates nothing

    result = runner.invoke(db, ["--db-url", url, "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"-> {head}" in result.output and len(result.output.splitlines()) == 1

    result = runner.invoke(db, ["current"], obj={"db_url": url})
    assert "up to date" in result.output

    result = runner.invoke(db, ["--db-url", url, "downgrade", first])
    assert result.exit_code == 0, result.output
    assert f"{head}" in result.output and f"-> {first}" in result.output

    result = runner.invoke(db, ["--db-url", url, "history"])
    assert result.exit_code == 0 and head in result.output


def test_db_commands_refuse_a_newer_database(tmp_path: Path) -> None:
    path = tmp_path / "cli.db"
    url = f"sqlite+aiosqlite:///{path}"
    runner = CliRunner()
    assert runner.invoke(db, ["--db-url", url, "upgrade"]).exit_code == 0
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'zzz'")
    result = runner.invoke(db, ["--db-url", url, "upgrade"])
    assert result.exit_code != 0 and "zzz" in result.output
