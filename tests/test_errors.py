"""Bad settings and missing data end in one clear line naming the setting or partition."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from billing_pipeline.errors import ConfigError, StoreUnavailableError
from billing_pipeline.stores.clickhouse import open_usage_store
from billing_pipeline.stores.postgres import billing_database_url, connect


def run_cli(*args, env_overrides, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "DAGSTER_"))}
    env.update({"BILLING_STATE_DIR": str(tmp_path / "state")}, **env_overrides)
    return subprocess.run([sys.executable, "-m", "billing_pipeline.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def assert_one_clear_line(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("billing: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_wrong_database_url_names_the_setting(monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", "mysql://root@localhost/billing")
    with pytest.raises(ConfigError, match="BILLING_DATABASE_URL='mysql://root@localhost/billing' is not a PostgreSQL URL"):
        billing_database_url()
    monkeypatch.setenv("BILLING_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
    with pytest.raises(ConfigError, match="names no database"):
        billing_database_url()


def test_unreachable_database_hides_the_password():
    with pytest.raises(StoreUnavailableError) as err:
        connect("postgresql://billing:s3cret@127.0.0.1:1/billing")
    assert "cannot connect to PostgreSQL at BILLING_DATABASE_URL='postgresql://billing:***@127.0.0.1:1/billing'" in str(err.value)
    assert "s3cret" not in str(err.value)


def test_unreachable_clickhouse_names_the_setting():
    with pytest.raises(StoreUnavailableError) as err:
        open_usage_store("http://reader:pw@127.0.0.1:1/usage")
    assert str(err.value) == ("cannot reach ClickHouse at BILLING_CLICKHOUSE_URL='http://reader:***@127.0.0.1:1/usage': "
                              "Connection refused")


def test_cli_bad_database_url(tmp_path):
    result = run_cli("migrate", env_overrides={"BILLING_DATABASE_URL": "postgresql://x:pw@127.0.0.1:1/billing"},
                     tmp_path=tmp_path)
    assert_one_clear_line(result, "BILLING_DATABASE_URL='postgresql://x:***@127.0.0.1:1/billing'", "Connection refused")


def test_cli_unreachable_clickhouse(tmp_path, db_url):
    result = run_cli("close", "--month", "2026-10", tmp_path=tmp_path,
                     env_overrides={"BILLING_DATABASE_URL": db_url, "BILLING_CLICKHOUSE_URL": "http://127.0.0.1:1"})
    assert_one_clear_line(result, "BILLING_CLICKHOUSE_URL='http://127.0.0.1:1'", "Connection refused")


def test_cli_month_without_usage_names_the_partitions_and_the_way_to_close_it_anyway(tmp_path, db_url):
    result = run_cli("close", "--month", "2026-10", tmp_path=tmp_path, env_overrides={"BILLING_DATABASE_URL": db_url})
    assert_one_clear_line(result, "requests_raw has no rows for 33 day(s): 2026-09-30, 2026-10-01",
                          "usage_rollups partition(s) 2026-09-30 ...", "billing close or billing dispute with "
                          "--allow-empty-days")
    # the advice works from the command line (it used to name only the UI's run config)
    result = run_cli("close", "--month", "2026-10", "--allow-empty-days", tmp_path=tmp_path,
                     env_overrides={"BILLING_DATABASE_URL": db_url})
    assert result.returncode == 0, result.stderr
    assert "Billing month 2026-10: 0 invoices from 0 requests (0 raw rows" in result.stdout
    assert "Totals by currency: none (no invoice drafts)" in result.stdout
    assert "31 days rolled up" in result.stdout  # the month's (and its two edge days, not counted here)


def test_cli_dispute_of_days_outside_the_month_is_refused_before_anything_runs(tmp_path):
    result = run_cli("dispute", "--month", "2026-10", "--day", "2026-10-31", "--day", "2026-11-15",
                     env_overrides={"BILLING_DATABASE_URL": "postgresql://x@127.0.0.1:1/never_reached"}, tmp_path=tmp_path)
    assert_one_clear_line(result, "dispute 2026-10: give days of the month (or its edge days); not in it: 2026-11-15")
    assert result.stdout == ""  # no database reached, no backfill announced


def test_cli_month_that_has_not_ended(tmp_path):
    result = run_cli("demo", "--month", "2099-01", env_overrides={}, tmp_path=tmp_path)
    assert_one_clear_line(result, "month 2099-01 is not a closable billing month (monthly partitions: 2025-01 ..")
    result = run_cli("demo", "--month", "Oct-2026", env_overrides={}, tmp_path=tmp_path)
    assert_one_clear_line(result, "month 'Oct-2026' is not YYYY-MM")


@pytest.mark.parametrize("command", [["ui"], ["stripe-webhook"]])
def test_cli_port_held_by_another_server(tmp_path, command):
    """Before, `billing ui` printed the URL of whatever answered there (another Dagster UI) while its
    own webserver failed to bind; the webhook endpoint died with a traceback."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        result = run_cli(*command, "--port", str(port), tmp_path=tmp_path,
                         env_overrides={"BILLING_STRIPE_WEBHOOK_SECRET": "whsec_test"})
    assert_one_clear_line(result, f"cannot listen on 127.0.0.1:{port}: Address already in use", "pass --port")


@pytest.mark.parametrize("name, value, wanted", [
    ("BILLING_AUDIT_RETENTION_YEARS", "ten", "a whole number of at least 1"),
    ("BILLING_AUDIT_RETENTION_YEARS", "0", "a whole number of at least 1"),
    ("BILLING_STRIPE_CONCURRENCY", "16.5", "a whole number of at least 1"),
    ("BILLING_STRIPE_MAX_OPS_PER_SECOND", "fast", "a decimal number of at least 0"),
    ("BILLING_FX_MAX_DIVERGENCE", "-0.1", "a decimal number of at least 0"),
    ("BILLING_FX_MAX_DIVERGENCE", "NaN", "a decimal number of at least 0"),
    ("BILLING_STRIPE_DRY_RUN", "maybe", "1, true, yes or on; 0, false, no or off"),
    ("BILLING_PARASUT_DRY_RUN", "2", "1, true, yes or on; 0, false, no or off"),
])
def test_a_setting_that_is_not_what_it_takes_is_named_when_the_definitions_load(monkeypatch, name, value, wanted):
    """Before, int() and Decimal() failed from inside the definitions ('invalid literal for int()'),
    naming no setting, and a dry-run flag other than 1/true/yes was silently off: live requests."""
    from billing_pipeline.definitions import build_resources

    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        build_resources()
    assert str(refused.value) == f"{name}={value!r} is not {wanted}"


def test_settings_that_are_what_they_take_configure_the_resources(monkeypatch):
    from decimal import Decimal

    from billing_pipeline.definitions import build_resources

    for name, value in {"BILLING_AUDIT_RETENTION_YEARS": " 7 ", "BILLING_STRIPE_CONCURRENCY": "4",
                        "BILLING_STRIPE_MAX_OPS_PER_SECOND": "12.5", "BILLING_FX_MAX_DIVERGENCE": "0.015",
                        "BILLING_STRIPE_DRY_RUN": "Yes", "BILLING_PARASUT_DRY_RUN": "off"}.items():
        monkeypatch.setenv(name, value)
    resources = build_resources()
    assert resources["audit_storage"].retention_years == 7
    assert (resources["stripe"].concurrency, resources["stripe"].max_ops_per_second) == (4, 12.5)
    assert resources["stripe"].dry_run is True and resources["parasut"].dry_run is False
    assert resources["fx_sources"].divergence_limit == Decimal("0.015")


@pytest.mark.parametrize("command", [["issue"], ["invoices"], ["dispute", "--day", "2026-10-05"]])
def test_cli_month_never_closed_is_refused_not_reported_empty(tmp_path, db_url, command):
    """Before, `issue` ran both sinks over nothing, `invoices` printed 0 drafts, as for a closed
    month without contracts, and `dispute` re-ran the day's rollup and failed on the empty store."""
    result = run_cli(command[0], "--month", "2026-10", *command[1:], tmp_path=tmp_path,
                     env_overrides={"BILLING_DATABASE_URL": db_url})
    assert_one_clear_line(result, "2026-10 has not been closed: rated_charges 2026-10-01 was never materialized",
                          "close it first: billing close --month 2026-10")


@pytest.mark.parametrize("command", [["issue"], ["dispute", "--day", "2026-10-05"]])
def test_cli_month_rated_but_never_drafted_is_refused(tmp_path, db_url, command):
    """A close that stopped after rated_charges (invoice_drafts failed): `issue` ran both sinks over
    no drafts and reported nothing issued, as for a month already issued."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO rating_runs (period_start, contracts, charges, unrated_requests) "
                     "VALUES ('2026-10-01', 4, 9, 0)")
    result = run_cli(command[0], "--month", "2026-10", *command[1:], tmp_path=tmp_path,
                     env_overrides={"BILLING_DATABASE_URL": db_url})
    assert_one_clear_line(result, "2026-10 has not been closed: rated_charges 2026-10-01 rated 4 contract(s) but "
                                  "invoice_drafts has drafted none; close it again: billing close --month 2026-10")


def test_cli_state_directory_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("migrate", tmp_path=tmp_path, env_overrides={"BILLING_STATE_DIR": str(blocker / "state")})
    assert_one_clear_line(result, f"BILLING_STATE_DIR: cannot create the state directory {blocker / 'state'} "
                                  "(Not a directory); set BILLING_STATE_DIR to a directory this user can write")


@pytest.mark.parametrize("args, said", [
    (["demo", "--orgs", "0"], "billing demo: error: argument --orgs: 0 is less than 1"),
    (["demo", "--events", "many"], "billing demo: error: argument --events: 'many' is not a whole number"),
    (["fx", "rate", "--currency", "USD", "--date", "bad"],
     "billing fx rate: error: argument --date: 'bad' is not a date (YYYY-MM-DD)"),
    (["dispute", "--month", "2026-10", "--day", "2026-10-5x"],
     "billing dispute: error: argument --day: '2026-10-5x' is not a date (YYYY-MM-DD)"),
    (["evidence", "--contract", "C", "--from", "2026-10-01", "--to", "31.10.2026"],
     "billing evidence: error: argument --to: '31.10.2026' is not a date (YYYY-MM-DD)"),
])
def test_cli_arguments_of_the_wrong_kind_are_refused_by_name(tmp_path, args, said):
    """Before, --orgs 0 reached ClickHouse (a division by zero, a traceback) and a bad date was
    'Invalid isoformat string' naming no argument."""
    result = run_cli(*args, tmp_path=tmp_path, env_overrides={})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == said
    assert "Traceback" not in result.stderr
