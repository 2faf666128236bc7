"""Processes starting at once on one fresh server: roles and databases are cluster-wide, so one of
them loses the race to create a role or a database, and must carry on rather than fail."""

import logging
import threading
import time
import uuid

import psycopg
import pytest

from billing_pipeline.stores.postgres import Migration, ensure_database, migrate


def _wait_until_blocked_on_a_lock(admin_url: str, query_fragment: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("""SELECT 1 FROM pg_stat_activity
                               WHERE wait_event_type = 'Lock' AND position(%s in query) > 0""",
                            (query_fragment,)).fetchone():
                return
            time.sleep(0.02)
    raise AssertionError(f"no backend waited on a lock running {query_fragment!r}")


def test_a_migration_that_loses_the_race_for_a_role_is_applied_again(pg_admin_url, empty_db_url, caplog):
    role = f"billing_test_race_{uuid.uuid4().hex[:10]}"
    creates_role = Migration(1, "role", f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} NOLOGIN;
            END IF;
        END $$;
        CREATE TABLE guarded (id integer);
        GRANT SELECT ON guarded TO {role};""")
    outcome: dict = {}
    caplog.set_level(logging.INFO, logger="billing_pipeline.stores.postgres")
    try:
        # another database's migration, mid-transaction: it has created the role, not yet committed
        with psycopg.connect(pg_admin_url) as other:
            other.execute(f"CREATE ROLE {role} NOLOGIN")

            def run() -> None:
                try:
                    outcome["applied"] = migrate(empty_db_url, [creates_role])
                except Exception as error:  # noqa: BLE001 - asserted below, with its text
                    outcome["error"] = error

            migrator = threading.Thread(target=run)
            migrator.start()
            # ours found no role, and its CREATE ROLE now waits on the other's uncommitted key
            _wait_until_blocked_on_a_lock(pg_admin_url, role)
            other.commit()
        migrator.join(timeout=30)
        assert not migrator.is_alive()
        assert "error" not in outcome, f"migrate failed: {outcome.get('error')!r}"
        assert outcome["applied"] == [1]
        assert "migration 0001_role raced another database's migration on a role" in caplog.text
        with psycopg.connect(empty_db_url) as conn:
            assert conn.execute("SELECT version, name FROM schema_migrations").fetchall() == [(1, "role")]
            assert conn.execute("SELECT has_table_privilege(%s, 'guarded', 'SELECT')", (role,)).fetchone() == (True,)
    finally:
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS guarded")
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_migration_that_fails_for_any_other_reason_is_not_retried(empty_db_url):
    broken = Migration(1, "broken", "CREATE TABLE twice (id integer); CREATE TABLE twice (id integer);")
    started = time.monotonic()
    with pytest.raises(psycopg.errors.DuplicateTable, match='relation "twice" already exists'):
        migrate(empty_db_url, [broken])
    assert time.monotonic() - started < 5
    with psycopg.connect(empty_db_url) as conn:  # nothing of it stayed
        assert conn.execute("SELECT to_regclass('twice'), to_regclass('schema_migrations')").fetchone() == (None, None)


def test_processes_creating_the_same_database_at_once_all_succeed(pg_admin_url):
    """ensure_database from four threads at once (each its own connection): before, the three
    losers failed on pg_database_datname_index, 30 of 30 in ten rounds."""
    for _ in range(5):
        name = f"billing_test_race_{uuid.uuid4().hex[:10]}"
        errors: list[Exception] = []

        def create() -> None:
            try:
                ensure_database(pg_admin_url, name, "BILLING_DATABASE_URL")
            except Exception as error:  # noqa: BLE001 - asserted below
                errors.append(error)

        threads = [threading.Thread(target=create) for _ in range(4)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert errors == []
            with psycopg.connect(pg_admin_url) as conn:
                assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (1,)
        finally:
            with psycopg.connect(pg_admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_billing_migrate_says_what_it_applied_then_that_the_schema_is_up_to_date(empty_db_url, tmp_path):
    import os
    import subprocess
    import sys

    from billing_pipeline.stores.postgres import load_migrations

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "DAGSTER_"))}
    env.update(BILLING_DATABASE_URL=empty_db_url, BILLING_STATE_DIR=str(tmp_path))

    def migrate_command() -> list[str]:
        result = subprocess.run([sys.executable, "-m", "billing_pipeline.cli", "migrate"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    assert migrate_command()[-1] == f"applied migrations: {[m.version for m in load_migrations()]}"
    assert migrate_command()[-1] == "applied migrations: none (up to date)"
