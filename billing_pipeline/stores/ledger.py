"""Writing and verifying the hash-chained ledger in PostgreSQL."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

import psycopg

from ..domain.ledger import GENESIS, LedgerEntry, LedgerTransaction, entry_hash

WRITER_ROLE = "billing_ledger_writer"
LEDGER_LOCK = 0x6C656467  # "ledg"


def append(conn: psycopg.Connection, transactions: list[LedgerTransaction]) -> list[LedgerEntry]:
    """Append transactions at the head of the chain, inside the caller's transaction.

    The writes run as the writer role, which can only read and insert. An advisory lock held to the
    end of the transaction serialises writers (readers are not blocked), so each entry links to
    the true head; the UNIQUE(prev_hash) constraint refuses a fork even from a writer that skipped
    the lock.
    """
    entries: list[LedgerEntry] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LEDGER_LOCK,))
        conn.execute(f"SET LOCAL ROLE {WRITER_ROLE}")
        head = conn.execute("SELECT hash FROM ledger ORDER BY entry_id DESC LIMIT 1").fetchone()
        prev = head[0] if head else GENESIS
        count = sum(len(t.postings) for t in transactions)
        ids = [r[0] for r in conn.execute("SELECT nextval('ledger_entry_id_seq') FROM generate_series(1, %s)",
                                          (count,))]
        now = datetime.now(timezone.utc)
        for tx in transactions:
            for posting in tx.postings:
                entry = LedgerEntry(ids[len(entries)], tx.tx_id, tx.kind, tx.entity_type, tx.entity_id,
                                    posting.account, posting.amount, posting.currency, now, prev)
                entry = LedgerEntry(**{**entry.__dict__, "hash": entry_hash(entry)})
                entries.append(entry)
                prev = entry.hash
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO ledger (entry_id, tx_id, event, entity_type, entity_id, account, amount, currency,
                       created_at, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                [(e.entry_id, e.tx_id, e.kind, e.entity_type, e.entity_id, e.account, e.amount, e.currency,
                  e.created_at, e.prev_hash, e.hash) for e in entries])
        conn.execute("RESET ROLE")
    return entries


@dataclass(frozen=True)
class Verification:
    entries: int
    transactions: int
    head: str
    first_error: str | None

    @property
    def ok(self) -> bool:
        return self.first_error is None


def verify(conn: psycopg.Connection) -> Verification:
    """Recompute every hash and link in chain order, and every transaction's balance."""
    prev = GENESIS
    count = 0
    balances: dict[tuple[uuid.UUID, str], Decimal] = defaultdict(Decimal)
    first_entry: dict[uuid.UUID, int] = {}
    error = None
    with conn.cursor(name="ledger_verify") as cur:  # server-side cursor: any ledger size
        cur.execute("""SELECT entry_id, tx_id, event, entity_type, entity_id, account, amount, currency, created_at,
                              prev_hash, hash FROM ledger ORDER BY entry_id""")
        for row in cur:
            count += 1
            entry = LedgerEntry(*row)
            if error is None:
                if entry.prev_hash != prev:
                    error = (f"entry {entry.entry_id}: prev_hash {entry.prev_hash[:12]}... does not match the hash of "
                             f"the entry before it ({prev[:12]}...): an entry was removed, inserted or moved")
                elif entry_hash(entry) != entry.hash:
                    error = (f"entry {entry.entry_id}: stored hash {entry.hash[:12]}... differs from the hash of its "
                             f"contents {entry_hash(entry)[:12]}...: the entry was edited")
            prev = entry.hash
            balances[(entry.tx_id, entry.currency)] += entry.amount
            first_entry.setdefault(entry.tx_id, entry.entry_id)
    if error is None:
        for (tx_id, currency), total in balances.items():
            if total != 0:
                error = (f"entry {first_entry[tx_id]}: transaction {tx_id} does not balance in {currency} "
                         f"({total} left over)")
                break
    return Verification(count, len(first_entry), prev, error)
