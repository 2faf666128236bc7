"""The sink outbox: every write to a provider is recorded before it is sent and after it answers.

A row is PENDING from just before the request until its answer is stored (SENT) or the provider
refused it (FAILED). After a crash, a PENDING row is the only trace of a request that may have
reached the provider, so the sink looks up what the provider holds before sending it again.
Dry runs record the exact requests as DRY_RUN rows and send nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

SINKS = ("STRIPE", "PARASUT")


@dataclass(frozen=True)
class OutboxRow:
    idempotency_key: str
    status: str
    external_id: str | None
    response: dict | None


def payload(method: str, path: str, params: dict) -> dict:
    return {"method": method.upper(), "path": path, "params": params}


def begin(conn: psycopg.Connection, sink: str, invoice_id: str | None, key: str, body: dict) -> OutboxRow | None:
    """Mark a request as about to be sent; returns the row if it was already SENT (skip it)."""
    row = conn.execute(
        """INSERT INTO sink_outbox (sink, invoice_id, idempotency_key, payload, status, attempts)
           VALUES (%s, %s, %s, %s, 'PENDING', 1)
           ON CONFLICT (idempotency_key) DO UPDATE SET
               attempts = sink_outbox.attempts + CASE WHEN sink_outbox.status = 'SENT' THEN 0 ELSE 1 END,
               status = CASE WHEN sink_outbox.status = 'SENT' THEN 'SENT' ELSE 'PENDING' END,
               payload = CASE WHEN sink_outbox.status = 'SENT' THEN sink_outbox.payload ELSE EXCLUDED.payload END,
               updated_at = now()
           RETURNING status, external_id, response""",
        (sink, invoice_id, key, Jsonb(body))).fetchone()
    return OutboxRow(key, row[0], row[1], row[2]) if row[0] == "SENT" else None


def sent(conn: psycopg.Connection, key: str, external_id: str | None, response: dict) -> None:
    conn.execute("""UPDATE sink_outbox SET status = 'SENT', external_id = %s, response = %s, last_error = NULL,
                        sent_at = now(), updated_at = now() WHERE idempotency_key = %s""",
                 (external_id, Jsonb(response), key))


def confirm(conn: psycopg.Connection, key: str, external_id: str, how: str) -> None:
    """A write left PENDING whose effect the sink has since seen at the provider (found by a lookup,
    or the object already past that step): SENT, so it is not reported as stuck."""
    conn.execute("""UPDATE sink_outbox SET status = 'SENT', external_id = %s, response = %s, last_error = NULL,
                        sent_at = now(), updated_at = now() WHERE idempotency_key = %s AND status = 'PENDING'""",
                 (external_id, Jsonb({"id": external_id, "found_by": how}), key))


def failed(conn: psycopg.Connection, key: str, error: str, definitive: bool) -> None:
    """definitive: the provider refused it (nothing was created); otherwise it stays PENDING, uncertain."""
    conn.execute("""UPDATE sink_outbox SET status = CASE WHEN %s THEN 'FAILED' ELSE status END, last_error = %s,
                        updated_at = now() WHERE idempotency_key = %s AND status <> 'SENT'""",
                 (definitive, error[:2000], key))


def rows(conn: psycopg.Connection, keys: list[str]) -> dict[str, OutboxRow]:
    found = conn.execute("SELECT idempotency_key, status, external_id, response FROM sink_outbox "
                         "WHERE idempotency_key = ANY(%s)", (keys,)).fetchall()
    return {r[0]: OutboxRow(*r) for r in found}


def record_dry_run(conn: psycopg.Connection, sink: str, invoice_id: str | None,
                   requests: list[tuple[str, dict]]) -> int:
    """(idempotency key, payload) pairs as DRY_RUN rows; a repeated dry run replaces its rows."""
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO sink_outbox (sink, invoice_id, idempotency_key, payload, status)
               VALUES (%s, %s, %s, %s, 'DRY_RUN')
               ON CONFLICT (idempotency_key) DO UPDATE SET payload = EXCLUDED.payload, updated_at = now()
               WHERE sink_outbox.status = 'DRY_RUN'""",
            [(sink, invoice_id, key, Jsonb(body)) for key, body in requests])
    return len(requests)


def stop_invoice(conn: psycopg.Connection, invoice_id: str, reason: str) -> None:
    """Store why an invoice stopped; back to DRAFT when no request for it can have reached the
    provider (a fix and a re-run then simply issue it), otherwise it stays ISSUING and a re-run
    resumes where it stopped."""
    conn.execute("""UPDATE invoices SET sink_error = %s, sink_error_at = now(),
                        status = CASE WHEN status = 'ISSUING' AND NOT EXISTS (
                            SELECT 1 FROM sink_outbox o WHERE o.invoice_id = invoices.invoice_id
                            AND o.status IN ('SENT', 'PENDING')) THEN 'DRAFT' ELSE status END
                    WHERE invoice_id = %s""", (reason, invoice_id))
