"""The ledger: append-only, double-entry at commit, hash-chained, tamper-evident."""

from __future__ import annotations

import subprocess
import sys
import threading
from decimal import Decimal

import psycopg
import pytest

from billing_pipeline.domain import ledger as L
from billing_pipeline.stores.ledger import append, verify
from test_stripe_sink import rows

D = Decimal


def _issue_and_pay(conn, n=3):
    txs = []
    for i in range(n):
        txs.append(L.invoice_issued(f"CTR-{i}:2026-10:v1", f"org_{i}", "TRY", D("25000.0000"), D("5000.0000")))
        txs.append(L.payment_received(f"CTR-{i}:2026-10:v1", f"org_{i}", "TRY", D("30000.0000")))
    txs.append(L.payment_failed("CTR-9:2026-10:v1", "org_9", "USD"))
    txs.append(L.document_issued("CREDIT_NOTE", "CTR-0:2026-10:v2:credit-note", "org_0", "TRY", D("-100.0000"),
                                 D("-20.0000"), corrects="CTR-0:2026-10:v1"))
    txs.append(L.credit_consumed("CTR-1:2026-10:v1", "org_1", "TRY", D("50.0000")))
    txs.append(L.adjustment("invoice", "CTR-2:2026-10:v1", [L.Posting("adjustments", D("0.0100"), "TRY"),
                                                           L.Posting("receivable:org_2", D("-0.0100"), "TRY")]))
    with conn.transaction():
        return append(conn, txs)


def test_chain_and_balances_verify(db_url):
    with psycopg.connect(db_url) as conn:
        entries = _issue_and_pay(conn)
        result = verify(conn)
    assert result.ok and (result.entries, result.transactions) == (len(entries), 10) == (25, 10)
    assert entries[0].prev_hash == L.GENESIS and all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:]))
    assert result.head == entries[-1].hash


def test_canonical_encoding_is_documented_and_stable():
    from datetime import datetime, timezone
    import uuid

    e = L.LedgerEntry(7, uuid.UUID("12345678-1234-5678-1234-567812345678"), "PAYMENT_RECEIVED", "invoice", "X",
                      "cash", D("12.5"), "USD", datetime(2026, 11, 1, tzinfo=timezone.utc), L.GENESIS)
    assert L.canonical_bytes(e) == (b'["v1",7,"12345678-1234-5678-1234-567812345678","PAYMENT_RECEIVED","invoice",'
                                    b'"X","cash","12.5000","USD","2026-11-01T00:00:00.000000Z","' + b"0" * 64 + b'"]')
    assert L.entry_hash(e) == __import__("hashlib").sha256(L.canonical_bytes(e)).hexdigest()


@pytest.mark.parametrize("statement", ["UPDATE ledger SET amount = 0", "DELETE FROM ledger", "TRUNCATE ledger"])
def test_append_only(db_url, statement):
    with psycopg.connect(db_url) as conn:
        _issue_and_pay(conn, 1)
        with pytest.raises(psycopg.errors.RaiseException, match="the ledger is append-only"):
            conn.execute(statement)


def test_writer_role_may_only_insert(db_url):
    with psycopg.connect(db_url) as conn:
        _issue_and_pay(conn, 1)
        conn.execute("SET session_replication_role = replica")  # even with the triggers off
        conn.execute("SET ROLE billing_ledger_writer")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE ledger SET amount = 0")


def test_unbalanced_transaction_is_refused_at_commit(db_url):
    with psycopg.connect(db_url) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="does not balance: 1.0000 USD left over"):
            with conn.transaction():
                conn.execute("""INSERT INTO ledger (tx_id, event, entity_type, entity_id, account, amount, currency,
                                    prev_hash, hash) VALUES (gen_random_uuid(), 'ADJUSTMENT', 'x', 'x', 'cash', 1,
                                    'USD', repeat('0', 64), repeat('1', 64))""")
    with pytest.raises(ValueError, match="does not balance"):
        L.adjustment("x", "x", [L.Posting("cash", D("1.0000"), "USD")])


def test_concurrent_writers_cannot_fork_the_chain(db_url):
    def writer(n):
        with psycopg.connect(db_url) as conn:
            for i in range(25):
                with conn.transaction():
                    append(conn, [L.payment_received(f"W{n}-{i}", f"org_{n}", "USD", D("1.0000"))])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(db_url) as conn:
        result = verify(conn)
    assert result.ok and result.entries == 4 * 25 * 2


def _tamper(db_url, *statements):
    with psycopg.connect(db_url, autocommit=True) as conn:  # a superuser with the triggers off
        conn.execute("SET session_replication_role = replica")
        for s in statements:
            conn.execute(s)


def _swap_ids(a: int, b: int) -> list[str]:
    return [f"UPDATE ledger SET entry_id = -1 WHERE entry_id = {a}", f"UPDATE ledger SET entry_id = {a} WHERE entry_id = {b}",
            f"UPDATE ledger SET entry_id = {b} WHERE entry_id = -1"]


@pytest.mark.parametrize("tamper, reported_at, reason", [
    (lambda first: [f"UPDATE ledger SET amount = amount + 1 WHERE entry_id = {first + 4}"], 4,
     "differs from the hash of its contents"),                     # an amount edited
    (lambda first: [f"DELETE FROM ledger WHERE entry_id = {first + 6}"], 7,
     "does not match the hash of the entry before it"),             # a row deleted
    (lambda first: _swap_ids(first + 2, first + 9), 2,
     "does not match the hash of the entry before it"),             # two rows swapped
])
def test_tampering_is_detected_and_named(db_url, tamper, reported_at, reason):
    with psycopg.connect(db_url) as conn:
        first = _issue_and_pay(conn)[0].entry_id
    _tamper(db_url, *tamper(first))
    with psycopg.connect(db_url) as conn:
        result = verify(conn)
    assert not result.ok
    assert result.first_error.startswith(f"entry {first + reported_at}: ")
    assert reason in result.first_error


def _issued_month(db_url) -> None:
    """October's three global drafts (stripe_fixture) issued through the local Stripe server: CTR-A
    0.16 USD, CTR-C 500.75 EUR less 120.00 of prepaid credit, CTR-T 49.00 USD."""
    from billing_pipeline.domain.periods import Period
    from billing_pipeline.sinks.stripe.gateway import RetryPolicy, StripeGateway
    from billing_pipeline.sinks.stripe.issuing import issue_month
    from billing_pipeline.stores.postgres import transaction
    from stripe_fixture import seed_global_drafts
    from stripe_server import StripeServer

    with transaction(db_url) as conn:
        seed_global_drafts(conn)
    with StripeServer() as server:
        gateway = StripeGateway("sk_test_local", server.url, 200, timeout_seconds=5,
                                retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05))
        result = issue_month(db_url, gateway, Period.parse_month("2026-10"))
    assert sorted(o.status for o in result.outcomes) == ["ISSUED"] * 3


def _ledger_verify(db_url, tmp_path) -> subprocess.CompletedProcess:
    env = {"BILLING_DATABASE_URL": db_url, "BILLING_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "billing_pipeline.cli", "ledger", "verify"], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_ledger_verify_exit_codes(db_url, tmp_path):
    _issued_month(db_url)
    ok = _ledger_verify(db_url, tmp_path)
    # three INVOICE_ISSUED (3 entries each) and CTR-C's CREDIT_CONSUMED (2)
    assert ok.returncode == 0 and "ledger OK: 11 entries in 4 transactions" in ok.stdout
    assert "issued documents OK: 3 agree with the ledger's record of their issue" in ok.stdout
    first = rows(db_url, "SELECT min(entry_id) FROM ledger")[0][0]
    _tamper(db_url, f"UPDATE ledger SET amount = 0 WHERE entry_id = {first + 1}")
    broken = _ledger_verify(db_url, tmp_path)
    assert broken.returncode == 1
    assert f"ledger BROKEN: entry {first + 1}: stored hash" in broken.stdout


@pytest.mark.parametrize("tamper, reported", [
    # an issued invoice's totals edited (its lines too, so the drafts' own checks agree)
    (["UPDATE invoices SET subtotal = subtotal + 50, total = total + 50 WHERE invoice_id = 'CTR-A:2026-10:v1'"],
     "invoice CTR-A:2026-10:v1: subtotal 50.1600 and tax 0.0000 USD, but the ledger recorded its issue at "
     "0.1600 and 0.0000 USD"),
    # the ledger's end cut off from the last issue on: the chain that is left is whole
    (["DELETE FROM ledger WHERE entry_id >= (SELECT min(entry_id) FROM ledger WHERE tx_id = (SELECT tx_id FROM "
      "ledger WHERE event = 'INVOICE_ISSUED' ORDER BY entry_id DESC LIMIT 1))"],
     "but the ledger records no issue of it (entries cut off the end?)"),
    # prepaid credit raised after the issue
    (["UPDATE invoices SET credits_applied = 150, total = total - 30 WHERE invoice_id = 'CTR-C:2026-10:v1'"],
     "invoice CTR-C:2026-10:v1: 150.0000 EUR of prepaid credit applied, but the ledger recorded 120.0000 consumed"),
    # an issued invoice put back to DRAFT, or deleted
    (["UPDATE invoices SET status = 'DRAFT' WHERE invoice_id = 'CTR-T:2026-10:v1'"],
     "invoice CTR-T:2026-10:v1 is DRAFT, but the ledger records its issue"),
    (["DELETE FROM invoice_lines WHERE invoice_id = 'CTR-T:2026-10:v1'",
      "DELETE FROM invoices WHERE invoice_id = 'CTR-T:2026-10:v1'"],
     "invoice CTR-T:2026-10:v1: the ledger records its issue, but there is no such invoice"),
])
def test_issued_documents_are_compared_with_the_ledger(db_url, tmp_path, tamper, reported):
    """The chain proves the ledger was not edited; the invoices, and the ledger's end, are proved by
    comparing each issued document with the ledger's record of its issue."""
    _issued_month(db_url)
    _tamper(db_url, *tamper)
    with psycopg.connect(db_url) as conn:
        assert verify(conn).ok  # the chain alone sees nothing wrong
    result = _ledger_verify(db_url, tmp_path)
    assert result.returncode == 1
    differs = [line for line in result.stdout.splitlines() if line.startswith("ledger DIFFERS: ")]
    assert len(differs) == 1 and reported in differs[0], result.stdout
