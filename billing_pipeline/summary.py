"""A month's invoice drafts as text for a terminal: one block per customer, then totals."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from .domain.money import round_money
from .domain.periods import Period
from .stores.postgres import connect


def _num(value: Decimal, currency: str | None = None) -> str:
    return f"{round_money(value, currency) if currency else value:,}"


def format_month_summary(db_url: str, period: Period, max_lines_per_invoice: int = 12) -> str:
    with connect(db_url) as conn:
        invoices = conn.execute(
            """SELECT i.invoice_id, cu.legal_name, c.contract_type, c.region, i.currency, i.subtotal, i.tax,
                      i.credits_applied, i.total
               FROM invoices i JOIN contracts c USING (contract_id) JOIN customers cu ON cu.org_id = i.org_id
               WHERE i.period_start = %s ORDER BY i.invoice_id""", (period.start,)).fetchall()
        lines = defaultdict(list)
        for invoice_id, description, quantity, unit_price, amount in conn.execute(
            """SELECT l.invoice_id, l.description, l.quantity, l.unit_price, l.amount FROM invoice_lines l
               JOIN invoices i USING (invoice_id) WHERE i.period_start = %s ORDER BY l.invoice_id, l.line_no""",
                (period.start,)):
            lines[invoice_id].append((description, quantity, unit_price, amount))
        rollup = conn.execute(
            """SELECT coalesce(sum(raw_rows), 0), coalesce(sum(duplicate_rows), 0), coalesce(sum(requests), 0),
                      count(*) FROM usage_rollup_days WHERE day >= %s AND day < %s""",
            (period.start, period.end)).fetchone()
        unrated = conn.execute("SELECT coalesce(sum(requests), 0) FROM unrated_usage WHERE period_start = %s",
                               (period.start,)).fetchone()[0]

    out = [f"Billing month {period.label}: {len(invoices)} invoice drafts from {rollup[2]:,} requests "
           f"({rollup[0]:,} raw rows, {rollup[1]:,} duplicates removed, {rollup[3]} days rolled up, "
           f"{unrated:,} requests without a contract)", ""]
    totals: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0), Decimal(0)])
    for invoice_id, customer, ctype, region, currency, subtotal, tax, credits, total in invoices:
        out.append(f"{invoice_id}  {customer}  [{ctype}, {region}]")
        shown = lines[invoice_id][:max_lines_per_invoice]
        for description, quantity, unit_price, amount in shown:
            out.append(f"    {description:<58} {unit_price.normalize():>14,f} {_num(amount, currency):>14} {currency}")
        if len(lines[invoice_id]) > len(shown):
            out.append(f"    ... {len(lines[invoice_id]) - len(shown)} more lines")
        tax_label = "tax (KDV 20%)" if region == "TR" else "tax (computed by Stripe at issue)"
        out.append(f"    {'subtotal':<73} {_num(subtotal, currency):>14} {currency}")
        out.append(f"    {tax_label:<73} {_num(tax, currency):>14} {currency}")
        if credits:
            out.append(f"    {'prepaid credit applied':<73} {_num(-credits, currency):>14} {currency}")
        out.append(f"    {'TOTAL':<73} {_num(total, currency):>14} {currency}")
        out.append("")
        for i, v in enumerate((subtotal, tax, total)):
            totals[currency][i] += v
    out.append("Totals by currency:" + ("" if totals else " none (no invoice drafts)"))
    for currency, (subtotal, tax, total) in sorted(totals.items()):
        out.append(f"    {currency}: subtotal {_num(subtotal, currency)}, tax {_num(tax, currency)}, total {_num(total, currency)}")
    return "\n".join(out)
