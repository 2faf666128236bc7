-- Contracts are written by the finance team's tools and by hand. A bad one is refused when it is
-- written, with a message naming the contract: the foreign key and CHECK constraints alone name
-- only the constraint or the plan, which does not say which of many inserted contracts is wrong.
-- (A currency with no ISO 4217 minor unit configured, or other than the plan's, is refused by
-- rating, which names the contract too.)
CREATE FUNCTION contract_terms_valid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM plans WHERE plan_id = NEW.plan_id) THEN
        RAISE EXCEPTION 'contract % names unknown plan %', NEW.contract_id, quote_literal(NEW.plan_id)
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'plans come from catalog/plans.yaml: sync the catalog before writing the contract';
    END IF;
    IF NEW.end_at IS NOT NULL AND NEW.end_at <= NEW.start_at THEN
        RAISE EXCEPTION 'contract %: end_at % is not after start_at %', NEW.contract_id,
            to_char(NEW.end_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            to_char(NEW.start_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'contract %: currency % is not an ISO 4217 code (three capital letters)',
            NEW.contract_id, quote_literal(NEW.currency) USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER contracts_terms_valid BEFORE INSERT OR UPDATE ON contracts
    FOR EACH ROW EXECUTE FUNCTION contract_terms_valid();
