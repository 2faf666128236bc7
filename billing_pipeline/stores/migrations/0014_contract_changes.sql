-- When a contract's terms last changed: its row, its discounts or its amendments (written by
-- finance, outside the pipeline). Drafting compares it with the month's rating: drafts made after a
-- change from charges rated before it mixed the two sets of terms (the old price and discount with
-- the new VAT rate), with every check green.
CREATE TABLE contract_changes (
    contract_id text NOT NULL,
    changed     text NOT NULL,  -- the table written
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX contract_changes_at_idx ON contract_changes (changed_at);

CREATE FUNCTION record_contract_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contract_changes (contract_id, changed)
    VALUES (CASE WHEN TG_OP = 'DELETE' THEN OLD.contract_id ELSE NEW.contract_id END, TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER contracts_changed AFTER INSERT OR UPDATE OR DELETE ON contracts
    FOR EACH ROW EXECUTE FUNCTION record_contract_change();
CREATE TRIGGER contract_discounts_changed AFTER INSERT OR UPDATE OR DELETE ON contract_discounts
    FOR EACH ROW EXECUTE FUNCTION record_contract_change();
CREATE TRIGGER contract_amendments_changed AFTER INSERT OR UPDATE OR DELETE ON contract_amendments
    FOR EACH ROW EXECUTE FUNCTION record_contract_change();
