"""Exchange rates for Turkish invoices: TCMB bulletins, the ECB cross-check, the rate an invoice uses.

Rules (also in the README):
- A Turkish invoice in lira converts each foreign-currency line at the central bank's (TCMB)
  ForexBuying rate of the last bulletin published before the invoice's issue date: bulletins
  appear on business days around 15:30 Istanbul time, so the issue date's own bulletin is never
  used; weekends and holidays (no file) are stepped over.
- ForexBuying is quoted per ``Unit`` (100 for JPY): the rate per one unit is ForexBuying / Unit.
- An empty ForexBuying element means "no quote", never zero.
- ECB's reference rates (per 1 EUR) give a cross rate TRY per currency; a TCMB rate further than
  the configured share (default 2%) from it is flagged (a WARN check), not replaced.
- A monthly invoice's issue date is the first day after its period, so re-running a month always
  finds the same bulletin.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation

RATE_PLACES = Decimal("1e-10")
MAX_RATE = Decimal(10**9)  # far above any quote (TRY per unit, or units per EUR), and exact at RATE_PLACES
MAX_STEP_BACK_DAYS = 10  # the longest run of Turkish holidays plus a weekend is 9 days


class FxDocumentError(ValueError):
    """A bulletin that cannot be trusted: malformed, wrongly dated, a bad number. Names what is wrong."""


@dataclass(frozen=True)
class TcmbBulletin:
    bulletin_date: date
    bulletin_no: str
    rates: dict[str, Decimal]  # TRY per 1 unit of the currency (ForexBuying / Unit)
    units: dict[str, int]
    sha256: str


@dataclass(frozen=True)
class EcbRates:
    rate_date: date
    per_eur: dict[str, Decimal]  # units of the currency per 1 EUR
    sha256: str

    def try_per(self, currency: str) -> Decimal | None:
        """TRY per 1 unit of ``currency`` through EUR."""
        try_per_eur = self.per_eur.get("TRY")
        if try_per_eur is None:
            return None
        if currency == "EUR":
            return try_per_eur
        other = self.per_eur.get(currency)
        return None if other is None else (try_per_eur / other).quantize(RATE_PLACES)


@dataclass(frozen=True)
class CrossCheck:
    ecb_rate: Decimal | None
    ecb_date: date | None
    divergence: Decimal | None  # |tcmb - ecb| / ecb
    flagged: bool


@dataclass(frozen=True)
class FxSnapshot:
    """The rate a month's invoices in ``currency`` use, with where it came from."""

    currency: str
    rate: Decimal
    source: str  # TCMB, or TCMB_LAST_KNOWN when no source answered
    bulletin_date: date
    issue_date: date
    raw_sha256: str
    estimated: bool
    cross_check: CrossCheck = field(default_factory=lambda: CrossCheck(None, None, None, False))

    @property
    def ref(self) -> str:
        return f"{self.source}:{self.bulletin_date.isoformat()}:{self.currency}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tcmb_path(day: date) -> str:
    """kurlar/YYYYMM/DDMMYYYY.xml"""
    return f"{day:%Y%m}/{day:%d%m%Y}.xml"


def bulletin_days_before(issue_date: date) -> list[date]:
    """Candidate bulletin days, latest first: business days before the issue date."""
    days = []
    day = issue_date - timedelta(days=1)
    while len(days) < MAX_STEP_BACK_DAYS and (issue_date - day).days <= MAX_STEP_BACK_DAYS + 4:
        if day.weekday() < 5:
            days.append(day)
        day -= timedelta(days=1)
    return days


def _decimal(text: str | None, what: str) -> Decimal | None:
    if text is None or not text.strip():
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise FxDocumentError(f"{what}: {text.strip()!r} is not a number") from None
    if not value.is_finite():  # NaN, Infinity
        raise FxDocumentError(f"{what}: {text.strip()!r} is not a number")
    if value <= 0:
        raise FxDocumentError(f"{what}: {value} is not a positive rate")
    if value >= MAX_RATE:
        raise FxDocumentError(f"{what}: {value} is out of range (a rate is below {MAX_RATE:,})")
    return value


def _xml_root(data: bytes, document: str) -> ET.Element:
    """The parsed document; FxDocumentError when it is not well-formed or declares an encoding
    that cannot be read."""
    try:
        return ET.fromstring(data)  # bytes: the parser reads the declared encoding itself
    except ET.ParseError as exc:
        raise FxDocumentError(f"{document} is not well-formed XML: {exc}") from None
    except (LookupError, ValueError) as exc:  # unknown or unsupported declared encoding
        raise FxDocumentError(f"{document} cannot be decoded: {exc}") from None


def parse_tcmb(data: bytes, expected_date: date | None = None) -> TcmbBulletin:
    """Parse a TCMB bulletin; the XML declaration's encoding (ISO-8859-9 in real files) is honoured."""
    document = f"TCMB bulletin {expected_date.isoformat()}" if expected_date else "TCMB bulletin"
    root = _xml_root(data, document)
    if root.tag != "Tarih_Date":
        raise FxDocumentError(f"{document}: root element is <{root.tag}>, expected <Tarih_Date>")
    try:
        bulletin_date = datetime.strptime(root.get("Tarih", ""), "%d.%m.%Y").date()
    except ValueError:
        raise FxDocumentError(f"{document}: Tarih attribute {root.get('Tarih')!r} is not DD.MM.YYYY") from None
    if expected_date is not None and bulletin_date != expected_date:
        raise FxDocumentError(f"TCMB bulletin fetched for {expected_date.isoformat()} is dated "
                              f"{bulletin_date.isoformat()}")
    rates, units = {}, {}
    for currency in root.findall("Currency"):
        code = (currency.get("CurrencyCode") or currency.get("Kod") or "").strip()
        if len(code) != 3:
            raise FxDocumentError(f"TCMB bulletin {bulletin_date}: a Currency has code {code!r}")
        unit_text = (currency.findtext("Unit") or "1").strip() or "1"
        if not unit_text.isdigit() or int(unit_text) <= 0:
            raise FxDocumentError(f"TCMB bulletin {bulletin_date}: {code} Unit {unit_text!r} is not a positive integer")
        buying = _decimal(currency.findtext("ForexBuying"), f"TCMB bulletin {bulletin_date}: {code} ForexBuying")
        if buying is None:
            continue  # no quote for this currency today
        rate = (buying / int(unit_text)).quantize(RATE_PLACES)
        if rate <= 0:
            raise FxDocumentError(f"TCMB bulletin {bulletin_date}: {code} ForexBuying {buying} per Unit {unit_text} "
                                  "rounds to a zero rate")
        units[code] = int(unit_text)
        rates[code] = rate
    return TcmbBulletin(bulletin_date, root.get("Bulten_No", ""), rates, units, sha256(data))


_ECB_NS = {"e": "http://www.ecb.int/vocabulary/2002-08-01/eurofxref"}


def parse_ecb(data: bytes) -> list[EcbRates]:
    """Every day of an ECB eurofxref file (daily, 90-day or full history), latest first."""
    root = _xml_root(data, "ECB eurofxref")
    digest = sha256(data)
    days = []
    for day_cube in root.findall(".//e:Cube/e:Cube[@time]", _ECB_NS):
        try:
            rate_date = date.fromisoformat(day_cube.get("time", ""))
        except ValueError:
            raise FxDocumentError(f"ECB eurofxref: time {day_cube.get('time')!r} is not YYYY-MM-DD") from None
        per_eur = {}
        for cube in day_cube.findall("e:Cube", _ECB_NS):
            value = _decimal(cube.get("rate"), f"ECB eurofxref {rate_date}: {cube.get('currency')}")
            if value is not None:
                per_eur[cube.get("currency")] = value
        days.append(EcbRates(rate_date, per_eur, digest))
    if not days:
        raise FxDocumentError("ECB eurofxref: no <Cube time=...> element")
    return sorted(days, key=lambda d: d.rate_date, reverse=True)


def ecb_on_or_before(days: list[EcbRates], day: date) -> EcbRates | None:
    return next((d for d in days if d.rate_date <= day), None)


def cross_check(tcmb_rate: Decimal, currency: str, ecb: EcbRates | None, max_divergence: Decimal) -> CrossCheck:
    reference = ecb.try_per(currency) if ecb else None
    if reference is None:
        return CrossCheck(None, ecb.rate_date if ecb else None, None, False)
    divergence = (abs(tcmb_rate - reference) / reference).quantize(Decimal("1e-6"))
    return CrossCheck(reference, ecb.rate_date, divergence, divergence > max_divergence)
