"""A month's invoice drafts as text for a terminal: one block per customer, then totals."""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal

from .domain.money import round_money
from .domain.periods import Period
from .stores.postgres import connect


def _num(value: Decimal, currency: str | None = None) -> str:
    return f"{round_money(value, currency) if currency else value:,}"


# Statuses of an invoice version that was issued (or whose corrections were): the version in force.
# A VOID version bills nothing: it is listed, never in force nor in the totals (as in
# invoicing.month_in_force and stg_invoices).
_ISSUED = ("ISSUED", "PAID", "CORRECTING", "CORRECTED")
_KIND_NAMES = {"CREDIT_NOTE": "credit note", "SUPPLEMENTARY": "supplementary invoice"}


def versions_in_force(versions: list[tuple]) -> dict[str, tuple]:
    """Per contract, the version that bills its month: the latest issued one (a corrected version
    counts: its documents carry the difference), else the latest draft. ``versions`` are rows whose
    first three fields are (invoice_id, contract_id, version) and whose status is at index 3."""
    chosen: dict[str, tuple] = {}
    for row in sorted(versions, key=lambda r: (r[1], r[2])):
        if row[3] == "VOID":
            continue
        current = chosen.get(row[1])
        if current is None or row[3] in _ISSUED or current[3] not in _ISSUED:
            chosen[row[1]] = row
    return chosen


def format_month_summary(db_url: str, period: Period, max_lines_per_invoice: int = 12) -> str:
    """The version of each contract's invoice that bills the month, with its lines, the
    corrections it was issued through and any later version not issued; totals of those versions.
    A dispute leaves several versions and documents in the month: summed together they counted
    the month's revenue two and three times."""
    with connect(db_url) as conn:
        rows = conn.execute(
            """SELECT i.invoice_id, i.contract_id, i.version, i.status, i.kind, cu.legal_name, c.contract_type,
                      c.region, i.currency, i.subtotal, i.tax, i.tax_rate, i.credits_applied, i.total, i.sink_error,
                      c.stripe_tax, i.external_tax
               FROM invoices i JOIN contracts c USING (contract_id) JOIN customers cu ON cu.org_id = i.org_id
               WHERE i.period_start = %s ORDER BY i.contract_id, i.version, i.invoice_id""", (period.start,)).fetchall()
        lines = defaultdict(list)
        for invoice_id, description, quantity, unit_price, amount in conn.execute(
            """SELECT l.invoice_id, l.description, l.quantity, l.unit_price, l.amount FROM invoice_lines l
               JOIN invoices i USING (invoice_id) WHERE i.period_start = %s AND i.kind = 'INVOICE'
               ORDER BY l.invoice_id, l.line_no""", (period.start,)):
            lines[invoice_id].append((description, quantity, unit_price, amount))
        rollup = conn.execute(
            """SELECT coalesce(sum(raw_rows), 0), coalesce(sum(duplicate_rows), 0), coalesce(sum(requests), 0),
                      count(*) FROM usage_rollup_days WHERE day >= %s AND day < %s""",
            (period.start, period.end)).fetchone()
        unrated = conn.execute("SELECT coalesce(sum(requests), 0) FROM unrated_usage WHERE period_start = %s",
                               (period.start,)).fetchone()[0]

    versions = [r for r in rows if r[4] == "INVOICE"]
    in_force = versions_in_force(versions)
    voided = [r for r in versions if r[3] == "VOID" and r[1] not in in_force]  # nothing else in force
    by_contract = defaultdict(list)  # every row of a contract, looked up per contract (100k contracts)
    for r in rows:
        by_contract[r[1]].append(r)
    statuses = Counter(r[3] for r in in_force.values())
    counted = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    out = [f"Billing month {period.label}: {len(in_force)} invoices{f' ({counted})' if counted else ''} from "
           f"{rollup[2]:,} requests ({rollup[0]:,} raw rows, {rollup[1]:,} duplicates removed, {rollup[3]} days "
           f"rolled up, {unrated:,} requests without a contract)"
           + (f"; {len(voided)} voided" if voided else ""), ""]
    totals: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0), Decimal(0)])
    for contract_id, row in sorted(in_force.items()):
        (invoice_id, _, version, status, _, customer, ctype, region, currency, subtotal, tax, rate, credits, total, _,
         stripe_tax, stripe_computed_tax) = row
        currency = currency.strip()
        if stripe_tax and stripe_computed_tax is not None:  # issued: the tax Stripe Tax charged (ours is 0)
            tax, total = stripe_computed_tax, subtotal + stripe_computed_tax - credits
        out.append(f"{invoice_id}  {customer}  [{ctype}, {region}]  {status}")
        shown = lines[invoice_id][:max_lines_per_invoice]
        for description, quantity, unit_price, amount in shown:
            out.append(f"    {description:<58} {unit_price.normalize():>14,f} {_num(amount, currency):>14} {currency}")
        if len(lines[invoice_id]) > len(shown):
            out.append(f"    ... {len(lines[invoice_id]) - len(shown)} more lines")
        tax_label = (f"tax (KDV {_percent(rate)})" if region == "TR" else
                     ("tax (Stripe Tax, as issued)" if stripe_computed_tax is not None
                      else "tax (computed by Stripe at issue)") if stripe_tax else "tax (none: Stripe Tax is off)")
        out.append(f"    {'subtotal':<73} {_num(subtotal, currency):>14} {currency}")
        out.append(f"    {tax_label:<73} {_num(tax, currency):>14} {currency}")
        if credits:
            out.append(f"    {'prepaid credit applied':<73} {_num(-credits, currency):>14} {currency}")
        out.append(f"    {'TOTAL':<73} {_num(total, currency):>14} {currency}")
        for d in by_contract[contract_id]:  # the documents that issued the differences up to this version
            if d[2] <= version and d[4] != "INVOICE":  # every correction up to it: v2's too under v3
                label = f"{_KIND_NAMES.get(d[4], d[4])} {d[0]} ({d[3]})"
                out.append(f"    {label:<73} {_num(d[13], currency):>14} {currency}")
        for later in by_contract[contract_id]:  # drafted after it, not issued: a correction that stopped, or unsent
            if later[4] == "INVOICE" and later[3] == "VOID":
                out.append(f"    v{later[2]} VOID: voided, bills nothing")
            elif later[4] == "INVOICE" and later[2] > version:
                why = f": {later[14]}" if later[14] else ", not issued yet"
                out.append(f"    v{later[2]} {later[3]}{why}")
        out.append("")
        for i, v in enumerate((subtotal, tax, total)):
            totals[currency][i] += v
    if voided:
        out.append("Voided (bill nothing, not in the totals):")
        out.extend(f"    {r[0]}  {r[5]}  VOID  {_num(r[13], r[8].strip())} {r[8].strip()}" for r in voided)
        out.append("")
    out.append("Totals by currency (the version of each invoice in force):" if totals
               else "Totals by currency: none (no invoice drafts)")
    for currency, (subtotal, tax, total) in sorted(totals.items()):
        out.append(f"    {currency}: subtotal {_num(subtotal, currency)}, tax {_num(tax, currency)}, total {_num(total, currency)}")
    return "\n".join(out)


def _percent(rate: Decimal) -> str:
    return f"{(rate * 100).normalize():f}%"
