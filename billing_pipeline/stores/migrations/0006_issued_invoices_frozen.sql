-- A finalized invoice is never changed (invariant 2). Once a document leaves DRAFT its identity
-- and amounts are frozen, and so are its lines; only its status (ISSUING -> ISSUED -> PAID / VOID,
-- CORRECTING -> CORRECTED, or back to DRAFT when nothing reached the provider) and its provider
-- fields move. An issued invoice is corrected by new documents, never by an edit.
CREATE FUNCTION invoice_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'DRAFT' THEN
            RAISE EXCEPTION 'invoice % is %: an invoice that left DRAFT is never deleted', OLD.invoice_id, OLD.status
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status <> 'DRAFT' AND (NEW.invoice_id, NEW.contract_id, NEW.org_id, NEW.period_start, NEW.period_end,
            NEW.version, NEW.kind, NEW.corrects_invoice_id, NEW.currency, NEW.subtotal, NEW.tax_rate, NEW.tax,
            NEW.credits_applied, NEW.total, NEW.source_currency, NEW.fx_rate, NEW.fx_snapshot_ref,
            NEW.contract_doc_sha256, NEW.issue_date)
        IS DISTINCT FROM (OLD.invoice_id, OLD.contract_id, OLD.org_id, OLD.period_start, OLD.period_end,
            OLD.version, OLD.kind, OLD.corrects_invoice_id, OLD.currency, OLD.subtotal, OLD.tax_rate, OLD.tax,
            OLD.credits_applied, OLD.total, OLD.source_currency, OLD.fx_rate, OLD.fx_snapshot_ref,
            OLD.contract_doc_sha256, OLD.issue_date) THEN
        RAISE EXCEPTION 'invoice % is %: its identity and amounts are frozen; correct it with a new version',
            OLD.invoice_id, OLD.status USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER invoices_frozen BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoice_frozen();

-- Lines: checked once per statement (a month's drafts insert and delete millions of lines).
CREATE FUNCTION invoice_lines_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    found text;
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        SELECT i.invoice_id || ' (' || i.status || ')' INTO found FROM changed_old c JOIN invoices i USING (invoice_id)
            WHERE i.status <> 'DRAFT' LIMIT 1;
    END IF;
    IF found IS NULL AND TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT i.invoice_id || ' (' || i.status || ')' INTO found FROM changed_new c JOIN invoices i USING (invoice_id)
            WHERE i.status <> 'DRAFT' LIMIT 1;
    END IF;
    IF found IS NOT NULL THEN
        RAISE EXCEPTION 'invoice %: the lines of an invoice that left DRAFT are frozen', found
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER invoice_lines_frozen_insert AFTER INSERT ON invoice_lines REFERENCING NEW TABLE AS changed_new
    FOR EACH STATEMENT EXECUTE FUNCTION invoice_lines_frozen();
CREATE TRIGGER invoice_lines_frozen_update AFTER UPDATE ON invoice_lines
    REFERENCING OLD TABLE AS changed_old NEW TABLE AS changed_new FOR EACH STATEMENT EXECUTE FUNCTION invoice_lines_frozen();
CREATE TRIGGER invoice_lines_frozen_delete AFTER DELETE ON invoice_lines REFERENCING OLD TABLE AS changed_old
    FOR EACH STATEMENT EXECUTE FUNCTION invoice_lines_frozen();
