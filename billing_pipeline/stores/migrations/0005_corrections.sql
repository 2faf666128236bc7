-- Corrections of issued invoices (the dispute flow). An issued invoice is never edited: a new
-- version is drafted, and its difference per line against the version in force is issued as a
-- credit note (the lines that went down) and/or a supplementary invoice (the lines that went up).
-- Both are documents in `invoices`, with their own ids, lines, sink fields and ledger entries;
-- a credit note's amounts are negative, so a month's revenue is the plain sum of its documents.
ALTER TABLE invoices
    ADD COLUMN kind text NOT NULL DEFAULT 'INVOICE'
        CHECK (kind IN ('INVOICE', 'CREDIT_NOTE', 'SUPPLEMENTARY')),
    ADD COLUMN corrects_invoice_id text REFERENCES invoices (invoice_id),  -- the issued invoice corrected
    ADD CONSTRAINT invoices_correction_link CHECK ((kind = 'INVOICE') = (corrects_invoice_id IS NULL));

-- A version (kind INVOICE) and the correction documents that bring it into force share its number.
ALTER TABLE invoices DROP CONSTRAINT invoices_contract_id_period_start_version_key;
ALTER TABLE invoices ADD CONSTRAINT invoices_one_document_per_version UNIQUE (contract_id, period_start, version, kind);

-- CORRECTING: a new version whose correction documents are being issued; CORRECTED: in force,
-- reached from the issued invoice through them (or with no document when no amount changed).
ALTER TABLE invoices DROP CONSTRAINT invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check
    CHECK (status IN ('DRAFT', 'ISSUING', 'ISSUED', 'PAID', 'VOID', 'SUPERSEDED', 'CORRECTING', 'CORRECTED'));

-- The line in force before and after the correction; `amount` is their difference.
ALTER TABLE invoice_lines
    ADD COLUMN amount_before numeric(20, 4),
    ADD COLUMN amount_after numeric(20, 4);

-- A Turkish credit note is recorded in Parasut as a refund (iade) purchase bill, not an e-document.
ALTER TABLE invoices DROP CONSTRAINT invoices_e_document_kind_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_e_document_kind_check
    CHECK (e_document_kind IN ('E_FATURA', 'E_ARSIV', 'REFUND_BILL'));
