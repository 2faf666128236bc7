-- A Turkish e-invoice takes no negative line: a discount is an allowance on the lines it reduces
-- (Parasut's per-line discount_value), and each line's KDV is computed net of it. This is each
-- line's share of the invoice's discount lines (domain/discount_shares.py); a discount line's own
-- amount is carried by these shares and is not sent. Null on lines drafted before the column
-- existed and on invoices outside Turkey.
ALTER TABLE invoice_lines ADD COLUMN discount_share numeric(20, 4);
