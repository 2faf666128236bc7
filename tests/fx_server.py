"""Local TCMB and ECB servers: bulletins as the real sites publish them (ISO-8859-9, per-100 units,
empty elements), missing on holidays, with injectable outages."""

from __future__ import annotations

import http.server
import threading
from datetime import date
from decimal import Decimal

from loopback import LoopbackServer

# name, English name, unit; a currency not given a rate is published with empty elements (as XDR is)
NAMES = {"USD": ("ABD DOLARI", "US DOLLAR"), "EUR": ("EURO", "EURO"), "JPY": ("JAPON YENİ", "JAPENESE YEN"),
         "CHF": ("İSVİÇRE FRANGI", "SWISS FRANK"), "XDR": ("ÖZEL ÇEKME HAKKI (SDR)", "SPECIAL DRAWING RIGHT (SDR)")}


def tcmb_xml(day: date, rates: dict[str, tuple[int, str]], encoding: str = "ISO-8859-9",
             dated: date | None = None) -> bytes:
    """A bulletin for ``day`` (or claiming ``dated``): rates are code -> (Unit, ForexBuying)."""
    shown = dated or day
    parts = [f'<?xml version="1.0" encoding="{encoding}"?>',
             '<?xml-stylesheet type="text/xsl" href="isokur.xsl"?>',
             f'<Tarih_Date Tarih="{shown:%d.%m.%Y}" Date="{shown:%m/%d/%Y}" Bulten_No="{shown:%Y}/{shown.timetuple().tm_yday}">']
    for order, code in enumerate(list(rates) + ["XDR"]):
        unit, buying = rates.get(code, (1, ""))
        try:
            selling = str((Decimal(buying) * Decimal("1.002")).quantize(Decimal("0.0001"))) if buying else ""
        except ArithmeticError:  # a deliberately malformed ForexBuying
            selling = buying
        isim, name = NAMES.get(code, (code, code))
        parts.append(f'<Currency CrossOrder="{order}" Kod="{code}" CurrencyCode="{code}"><Unit>{unit}</Unit>'
                     f'<Isim>{isim}</Isim><CurrencyName>{name}</CurrencyName><ForexBuying>{buying}</ForexBuying>'
                     f'<ForexSelling>{selling}</ForexSelling><BanknoteBuying></BanknoteBuying>'
                     f'<BanknoteSelling></BanknoteSelling><CrossRateUSD/><CrossRateOther/></Currency>')
    parts.append("</Tarih_Date>")
    return "\r\n".join(parts).encode(encoding)


def ecb_xml(days: dict[date, dict[str, str]]) -> bytes:
    cubes = "".join(
        f'<Cube time="{d.isoformat()}">' + "".join(f'<Cube currency="{c}" rate="{r}"/>' for c, r in rates.items())
        + "</Cube>" for d, rates in sorted(days.items(), reverse=True))
    return ('<?xml version="1.0" encoding="UTF-8"?><gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" '
            'xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref"><gesmes:subject>Reference rates</gesmes:subject>'
            f'<Cube>{cubes}</Cube></gesmes:Envelope>').encode()


class FxServer(LoopbackServer):
    """Serves ``files`` (path -> bytes) under /kurlar/ and /eurofxref/; ``down`` paths answer 503;
    ``hang`` makes every request wait past the client's timeout."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.down: set[str] = set()  # path prefixes answering 503
        self.requests: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                with server.lock:
                    server.requests.append(self.path)
                if any(self.path.startswith(p) for p in server.down):
                    return self._send(503, b"Service Unavailable")
                body = server.files.get(self.path)
                if body is None:
                    return self._send(404, b"Not Found")
                self._send(200, body, "application/xml")

            def _send(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(Handler)
        self.tcmb_base = f"{self.url}/kurlar"
        self.ecb_base = f"{self.url}/eurofxref"

    def publish_tcmb(self, day: date, rates: dict[str, tuple[int, str]], **kwargs) -> None:
        self.files[f"/kurlar/{day:%Y%m}/{day:%d%m%Y}.xml"] = tcmb_xml(day, rates, **kwargs)

    def publish_ecb(self, days: dict[date, dict[str, str]]) -> None:
        self.files["/eurofxref/eurofxref-hist-90d.xml"] = ecb_xml(days)

