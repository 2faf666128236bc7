"""The usage appendix of a fixed-price Turkish invoice as a PDF (fpdf2), byte-for-byte repeatable:
the same invoice always gives the same file, so storing it again changes nothing."""

from __future__ import annotations

import unicodedata
from datetime import datetime, timezone

from fpdf import FPDF

_FIXED_DATE = datetime(2000, 1, 1, tzinfo=timezone.utc)  # no wall-clock time inside the file


def _latin1(text: str) -> str:
    """The core PDF fonts are Latin-1: Turkish letters outside it lose their marks (s-cedilla -> s)."""
    return unicodedata.normalize("NFKD", text).encode("latin-1", "ignore").decode("latin-1")


def appendix_pdf(document: dict) -> bytes:
    pdf = FPDF()
    pdf.set_creation_date(_FIXED_DATE)
    pdf.set_title(_latin1(f"Usage appendix {document['invoice_id']}"))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 10, _latin1(f"Usage appendix - invoice {document['invoice_id']}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for label, value in (("Contract", document["contract_id"]), ("Period", document["period"]),
                         ("Fixed monthly fee", f"{document['fixed_fee_try']} TRY"),
                         ("Contract document SHA-256", document.get("contract_doc_sha256") or "-")):
        pdf.cell(0, 6, _latin1(f"{label}: {value}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    with pdf.table(col_widths=(12, 140, 38), text_align=("RIGHT", "LEFT", "RIGHT")) as table:
        header = table.row()
        for title in ("#", "Usage", "Amount (TRY)"):
            header.cell(title)
        for line in document["lines"]:
            row = table.row()
            row.cell(str(line["line_no"]))
            row.cell(_latin1(line["description"]))
            row.cell(line["amount_try"])
    return bytes(pdf.output())
