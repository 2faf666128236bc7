-- Analysts read the dbt marts through this role and nothing else: dbt grants it usage and select
-- on the schemas it writes after every run (macro grant_to_analysts). A person gets a login in
-- it: CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE billing_analyst. Roles are cluster-wide.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'billing_analyst') THEN
        CREATE ROLE billing_analyst NOLOGIN;
    END IF;
END $$;
