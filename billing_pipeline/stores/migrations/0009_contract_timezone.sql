-- A contract's timezone decides which calendar days it bills (usage is split at its local
-- midnights), so a name that is not a time zone is refused when the contract is written, naming
-- the contract, instead of failing the next rollup. IANA names only (Europe/Istanbul, UTC,
-- America/New_York): PostgreSQL also accepts POSIX strings such as 'UTC+3', whose sign is the
-- reverse of what most people mean, and which the pipeline's zone database does not know.
CREATE FUNCTION contract_timezone_valid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.timezone !~ '^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$' THEN
        RAISE EXCEPTION 'contract %: timezone % is not an IANA time zone name (e.g. Europe/Istanbul)',
            NEW.contract_id, quote_literal(NEW.timezone) USING ERRCODE = 'check_violation';
    END IF;
    BEGIN
        PERFORM now() AT TIME ZONE NEW.timezone;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'contract %: timezone % is not an IANA time zone name (e.g. Europe/Istanbul)',
            NEW.contract_id, quote_literal(NEW.timezone) USING ERRCODE = 'check_violation';
    END;
    RETURN NEW;
END
$$;

CREATE TRIGGER contracts_timezone_valid BEFORE INSERT OR UPDATE OF timezone ON contracts
    FOR EACH ROW EXECUTE FUNCTION contract_timezone_valid();
