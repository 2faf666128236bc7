"""fx_snapshot: the TCMB rates a month's Turkish invoices use, fetched, cross-checked and kept.

For each foreign currency a Turkish contract is rated in, the bulletin of the last business day
before the issue date (the first day after the month) is fetched, stepping back over days without
a file (holidays). Every document fetched is stored with its SHA-256; the chosen rate is checked
against ECB's cross rate. When no source answers, the last known rate is reused and marked
estimated; a malformed or wrongly dated bulletin is never used and never stepped over: the
currency fails with the reason, and the invoices needing it stop.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import psycopg

from ..domain.fx import (CrossCheck, EcbRates, FxDocumentError, FxSnapshot, TcmbBulletin, bulletin_days_before,
                         cross_check, ecb_on_or_before, parse_ecb, parse_tcmb, sha256, tcmb_path)
from ..domain.periods import Period
from ..stores.postgres import lock_partitions, transaction

DEFAULT_TCMB_BASE = "https://www.tcmb.gov.tr/kurlar"
DEFAULT_ECB_BASE = "https://www.ecb.europa.eu/stats/eurofxref"
ISTANBUL = ZoneInfo("Europe/Istanbul")


class SourceUnavailable(Exception):
    """The source did not answer (timeouts, 5xx, refused) after retries."""


@dataclass
class FetchedDocument:
    source: str
    url: str
    body: bytes
    fetched_at: datetime

    @property
    def sha256(self) -> str:
        return sha256(self.body)


@dataclass
class CurrencyOutcome:
    currency: str
    snapshot: FxSnapshot | None = None
    failure: str | None = None


@dataclass
class FxResult:
    issue_date: date
    outcomes: list[CurrencyOutcome] = field(default_factory=list)
    documents: list[FetchedDocument] = field(default_factory=list)
    ecb_note: str = ""


class FxSources:
    """TCMB and ECB over HTTP (base URLs are settings), retried with backoff on 5xx and timeouts."""

    def __init__(self, tcmb_base: str = DEFAULT_TCMB_BASE, ecb_base: str = DEFAULT_ECB_BASE,
                 attempts: int = 3, base_delay: float = 0.5, timeout: float = 10.0, sleep=time.sleep):
        self.tcmb_base, self.ecb_base = tcmb_base.rstrip("/"), ecb_base.rstrip("/")
        self.attempts, self.base_delay, self._sleep = attempts, base_delay, sleep
        self.client = httpx.Client(timeout=timeout, follow_redirects=True)

    def _get(self, source: str, url: str) -> FetchedDocument | None:
        """The document, None on 404 (no bulletin that day), SourceUnavailable when it will not answer."""
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.client.get(url)
                if response.status_code == 404:
                    return None
                if response.status_code == 200:
                    return FetchedDocument(source, url, response.content, datetime.now(timezone.utc))
                last = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if attempt < self.attempts:
                self._sleep(self.base_delay * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
        raise SourceUnavailable(f"{source} {url}: {last}")

    def tcmb(self, day: date) -> FetchedDocument | None:
        today_in_istanbul = datetime.now(ISTANBUL).date()
        path = "today.xml" if day == today_in_istanbul else tcmb_path(day)
        return self._get("TCMB", f"{self.tcmb_base}/{path}")

    def ecb_history(self) -> FetchedDocument | None:
        return self._get("ECB", f"{self.ecb_base}/eurofxref-hist-90d.xml")

    def close(self) -> None:
        self.client.close()


def latest_bulletin_before(sources: FxSources, issue_date: date, currencies: set[str],
                           documents: list[FetchedDocument]) -> TcmbBulletin:
    """The last bulletin before ``issue_date`` quoting every currency; FxDocumentError for a bad file,
    SourceUnavailable when TCMB does not answer."""
    for day in bulletin_days_before(issue_date):
        document = sources.tcmb(day)
        if document is None:
            continue  # a holiday: no bulletin that day
        documents.append(document)
        bulletin = parse_tcmb(document.body, expected_date=day)
        missing = currencies - bulletin.rates.keys()
        if missing:
            raise FxDocumentError(f"TCMB bulletin {day.isoformat()} has no ForexBuying for {', '.join(sorted(missing))}")
        return bulletin
    raise FxDocumentError(f"no TCMB bulletin in the {len(bulletin_days_before(issue_date))} business days before "
                          f"{issue_date.isoformat()}")


def resolve(sources: FxSources, currencies: set[str], issue_date: date, max_divergence: Decimal,
            last_known=lambda currency, before: None) -> FxResult:
    """The rate for each currency; ``last_known(currency, before)`` returns a stored FxSnapshot."""
    result = FxResult(issue_date)
    if not currencies:
        return result
    try:
        bulletin = latest_bulletin_before(sources, issue_date, currencies, result.documents)
        error = None
    except SourceUnavailable as exc:
        bulletin, error = None, f"TCMB did not answer ({exc})"
    except FxDocumentError as exc:
        result.outcomes = [CurrencyOutcome(c, failure=str(exc)) for c in sorted(currencies)]
        return result

    ecb_days: list[EcbRates] = []
    try:
        ecb_doc = sources.ecb_history()
        if ecb_doc is not None:
            result.documents.append(ecb_doc)
            ecb_days = parse_ecb(ecb_doc.body)
    except (SourceUnavailable, FxDocumentError) as exc:
        result.ecb_note = f"ECB cross-check unavailable: {exc}"

    for currency in sorted(currencies):
        if bulletin is not None:
            rate = bulletin.rates[currency]
            check = cross_check(rate, currency, ecb_on_or_before(ecb_days, bulletin.bulletin_date), max_divergence)
            result.outcomes.append(CurrencyOutcome(currency, FxSnapshot(
                currency, rate, "TCMB", bulletin.bulletin_date, issue_date, bulletin.sha256, False, check)))
            continue
        known = last_known(currency, issue_date)
        if known is None:
            result.outcomes.append(CurrencyOutcome(currency, failure=f"{error}; no earlier {currency} rate is known"))
        else:
            result.outcomes.append(CurrencyOutcome(currency, FxSnapshot(
                currency, known.rate, "TCMB_LAST_KNOWN", known.bulletin_date, issue_date, known.raw_sha256, True,
                CrossCheck(None, None, None, False))))
    if error:
        result.ecb_note = (result.ecb_note + "; " if result.ecb_note else "") + error
    return result


# --- the billing database -------------------------------------------------------------------------

def foreign_currencies(conn: psycopg.Connection, period: Period) -> set[str]:
    """Currencies Turkish contracts in force during the period are rated in, other than lira."""
    return {r[0].strip() for r in conn.execute(
        """SELECT DISTINCT currency FROM contracts_in_force WHERE region = 'TR' AND currency <> 'TRY'
           AND start_at < %s AND (covers_until IS NULL OR covers_until > %s)""",
        (period.end, period.start))}


def last_known_from(conn: psycopg.Connection):
    def last_known(currency: str, before: date) -> FxSnapshot | None:
        row = conn.execute(
            """SELECT rate, bulletin_date, raw_sha256 FROM fx_snapshots
               WHERE currency = %s AND bulletin_date < %s AND NOT estimated ORDER BY bulletin_date DESC LIMIT 1""",
            (currency, before)).fetchone()
        return None if row is None else FxSnapshot(currency, Decimal(row[0]), "TCMB", row[1], before, row[2], False)
    return last_known


def snapshot_month(db_url: str, period: Period, sources: FxSources, max_divergence: Decimal) -> FxResult:
    """Resolve and store the month's rates (replacing the month's earlier snapshot)."""
    with transaction(db_url) as conn:
        lock_partitions(conn, "fx_snapshot", [period.start.isoformat()])
        currencies = foreign_currencies(conn, period)
        result = resolve(sources, currencies, period.end, max_divergence, last_known_from(conn))
        for doc in result.documents:
            conn.execute("""INSERT INTO fx_documents (sha256, source, url, body, fetched_at) VALUES (%s, %s, %s, %s, %s)
                            ON CONFLICT (sha256) DO NOTHING""", (doc.sha256, doc.source, doc.url, doc.body,
                                                                  doc.fetched_at))
        conn.execute("DELETE FROM fx_snapshots WHERE period_start = %s", (period.start,))
        fetched_at = max((d.fetched_at for d in result.documents), default=datetime.now(timezone.utc))
        for outcome in result.outcomes:
            s = outcome.snapshot
            if s is None:
                conn.execute("""INSERT INTO fx_snapshots (period_start, currency, issue_date, status, failure)
                                VALUES (%s, %s, %s, 'FAILED', %s)""", (period.start, outcome.currency, period.end,
                                                                       outcome.failure))
                continue
            c = s.cross_check
            conn.execute(
                """INSERT INTO fx_snapshots (period_start, currency, issue_date, status, rate, source, bulletin_date,
                       fetched_at, raw_sha256, estimated, ecb_rate, ecb_date, divergence, divergence_flagged)
                   VALUES (%s, %s, %s, 'OK', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (period.start, s.currency, s.issue_date, s.rate, s.source, s.bulletin_date, fetched_at, s.raw_sha256,
                 s.estimated, c.ecb_rate, c.ecb_date, c.divergence, c.flagged))
            if not s.estimated:
                conn.execute(
                    """INSERT INTO fx_rates (rate_date, source, base_currency, quote_currency, kind, rate, bulletin_sha256,
                           fetched_at) VALUES (%s, 'TCMB', %s, 'TRY', 'ForexBuying', %s, %s, %s)
                       ON CONFLICT DO NOTHING""", (s.bulletin_date, s.currency, s.rate, s.raw_sha256, fetched_at))
    return result


def month_rates(conn: psycopg.Connection, period: Period) -> dict[str, tuple]:
    """currency -> (status, rate, snapshot ref, estimated, failure) for the month's drafts."""
    return {r[0].strip(): (r[1], None if r[2] is None else Decimal(r[2]),
                           f"{r[3]}:{r[4].isoformat()}:{r[0].strip()}" if r[3] else None, r[5], r[6])
            for r in conn.execute("""SELECT currency, status, rate, source, bulletin_date, estimated, failure
                                     FROM fx_snapshots WHERE period_start = %s""", (period.start,))}

