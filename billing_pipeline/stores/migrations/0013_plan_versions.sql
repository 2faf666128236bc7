-- Plans keep their history, and a month keeps the prices it was issued with.
--
-- Every definition a plan has had (recorded by the trigger below, whoever writes `plans`), and per
-- month the version of each plan its rating used. Until a month has an issued invoice its rating
-- takes each plan's current version; from then on the version it was rated with, so a dispute
-- re-run of an old month is priced as it was issued, not at a price set since (rating re-priced
-- it, and the audit snapshot exported the new definitions beside the old invoices).
CREATE TABLE plan_versions (
    version_id        bigserial PRIMARY KEY,
    plan_id           text NOT NULL REFERENCES plans (plan_id),
    name              text NOT NULL,
    plan_type         text NOT NULL,
    currency          char(3) NOT NULL,
    billing_cycle     text NOT NULL,
    base_price        numeric(20, 4) NOT NULL,
    definition        jsonb NOT NULL,
    definition_sha256 char(64) NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plan_versions_plan_idx ON plan_versions (plan_id, version_id);

INSERT INTO plan_versions (plan_id, name, plan_type, currency, billing_cycle, base_price, definition, definition_sha256,
                           recorded_at)
SELECT plan_id, name, plan_type, currency, billing_cycle, base_price, definition, definition_sha256, updated_at
FROM plans ORDER BY plan_id;

CREATE FUNCTION record_plan_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR (OLD.name, OLD.plan_type, OLD.currency, OLD.billing_cycle, OLD.base_price, OLD.definition)
            IS DISTINCT FROM (NEW.name, NEW.plan_type, NEW.currency, NEW.billing_cycle, NEW.base_price, NEW.definition)
    THEN
        INSERT INTO plan_versions (plan_id, name, plan_type, currency, billing_cycle, base_price, definition,
                                   definition_sha256)
        VALUES (NEW.plan_id, NEW.name, NEW.plan_type, NEW.currency, NEW.billing_cycle, NEW.base_price, NEW.definition,
                NEW.definition_sha256);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER plans_versioned AFTER INSERT OR UPDATE ON plans FOR EACH ROW EXECUTE FUNCTION record_plan_version();

CREATE TABLE month_plan_versions (
    period_start date NOT NULL,
    plan_id      text NOT NULL,
    version_id   bigint NOT NULL REFERENCES plan_versions (version_id),
    PRIMARY KEY (period_start, plan_id)
);
