-- The ledger made provable: append-only, double-entry at commit, hash-chained without forks.
-- Hashes are computed by billing_pipeline/domain/ledger.py over a documented canonical encoding
-- and checked by `billing ledger verify`.

-- One successor per entry: two writers racing from the same head cannot both insert.
ALTER TABLE ledger ALTER COLUMN prev_hash SET NOT NULL;
ALTER TABLE ledger ADD CONSTRAINT ledger_one_successor UNIQUE (prev_hash);
ALTER TABLE ledger ADD CONSTRAINT ledger_hash_unique UNIQUE (hash);
CREATE INDEX ledger_tx_idx ON ledger (tx_id);

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on ledger refused', TG_OP
        USING HINT = 'record a correcting transaction (adjustment or credit note) instead';
END $$;

CREATE TRIGGER ledger_no_update_or_delete BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- Double entry, checked when the transaction commits (entries of one tx_id sum to zero per currency).
CREATE FUNCTION ledger_tx_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    off record;
BEGIN
    SELECT currency, sum(amount) AS total INTO off FROM ledger
    WHERE tx_id = NEW.tx_id GROUP BY currency HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: % % left over', NEW.tx_id, off.total, off.currency;
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_double_entry AFTER INSERT ON ledger
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_tx_balanced();

-- The role the pipeline writes the ledger as: it may read and insert, nothing else.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'billing_ledger_writer') THEN
        CREATE ROLE billing_ledger_writer NOLOGIN;
    END IF;
END $$;
REVOKE ALL ON ledger FROM PUBLIC;
GRANT SELECT, INSERT ON ledger TO billing_ledger_writer;
GRANT USAGE ON SEQUENCE ledger_entry_id_seq TO billing_ledger_writer;
-- The migrating user writes through that role (SET ROLE needs membership unless superuser).
DO $$
BEGIN
    EXECUTE format('GRANT billing_ledger_writer TO %I', current_user);
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'grant billing_ledger_writer to the pipeline user by hand: %', SQLERRM;
END $$;
