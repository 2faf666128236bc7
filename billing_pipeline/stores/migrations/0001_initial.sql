-- Billing schema, first version. Money is numeric everywhere; every table says what it holds.

-- Plan templates, synced from catalog/plans.yaml: `definition` is the validated plan document
-- (price models, tiers, chain multipliers, included units, caps) that rating reads.
CREATE TABLE plans (
    plan_id         text PRIMARY KEY,
    name            text NOT NULL,
    plan_type       text NOT NULL CHECK (plan_type IN ('METERED', 'FIXED', 'HYBRID')),
    currency        char(3) NOT NULL,
    billing_cycle   text NOT NULL DEFAULT 'MONTHLY' CHECK (billing_cycle IN ('MONTHLY', 'YEARLY')),
    base_price      numeric(20, 4) NOT NULL DEFAULT 0 CHECK (base_price >= 0),  -- per billing cycle
    definition      jsonb NOT NULL,
    definition_sha256 char(64) NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Who is invoiced: legal name, tax identity and address, as e-invoicing needs them.
CREATE TABLE customers (
    org_id          text PRIMARY KEY,
    legal_name      text NOT NULL,
    country         char(2) NOT NULL,
    tax_id          text,          -- VKN (10 digits) or TCKN (11 digits) for Turkish customers
    tax_office      text,
    email           text,
    address         text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contracts (
    contract_id         text PRIMARY KEY,
    org_id              text NOT NULL REFERENCES customers (org_id),
    plan_id             text NOT NULL REFERENCES plans (plan_id),
    contract_type       text NOT NULL CHECK (contract_type IN ('METERED', 'FIXED', 'HYBRID')),
    currency            char(3) NOT NULL,
    region              text NOT NULL CHECK (region IN ('GLOBAL', 'TR')),
    start_at            timestamptz NOT NULL,
    end_at              timestamptz,
    price_fixed         numeric(20, 4) CHECK (price_fixed >= 0),  -- overrides the plan's base fee
    billing_cycle       text NOT NULL DEFAULT 'MONTHLY' CHECK (billing_cycle IN ('MONTHLY', 'YEARLY')),
    timezone            text NOT NULL DEFAULT 'UTC',
    sla                 text,
    custom_terms        jsonb NOT NULL DEFAULT '{}',
    signed_doc_url      text,
    signed_doc_sha256   char(64) CHECK (signed_doc_sha256 ~ '^[0-9a-f]{64}$'),
    auto_renew          boolean NOT NULL DEFAULT false,
    minimum_commitment  numeric(20, 4) CHECK (minimum_commitment > 0),  -- monthly spend floor; overrides the plan's
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (end_at IS NULL OR end_at > start_at)
);
CREATE INDEX contracts_org_idx ON contracts (org_id);

-- What rating reads: an auto-renewing contract renews term after term, so its end_at (the end of
-- the current term) does not end its coverage; a manual one ends at end_at unless renewed.
CREATE VIEW contracts_in_force AS
SELECT c.*, CASE WHEN c.auto_renew THEN NULL ELSE c.end_at END AS covers_until
FROM contracts c;

-- A change of terms from a date (plan upgrade, price amendment): the days from effective_from
-- on are rated by these terms, the days before by the previous ones.
CREATE TABLE contract_amendments (
    contract_id         text NOT NULL REFERENCES contracts (contract_id),
    effective_from      timestamptz NOT NULL,
    plan_id             text NOT NULL REFERENCES plans (plan_id),
    price_fixed         numeric(20, 4) CHECK (price_fixed >= 0),
    minimum_commitment  numeric(20, 4) CHECK (minimum_commitment > 0),
    reason              text NOT NULL,
    signed_doc_sha256   char(64) CHECK (signed_doc_sha256 ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (contract_id, effective_from)
);

CREATE TABLE contract_discounts (
    contract_id     text NOT NULL REFERENCES contracts (contract_id),
    discount_id     text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('PERCENT', 'FIXED')),
    value           numeric(20, 6) NOT NULL CHECK (value > 0),   -- percent (10 = 10%) or amount per month
    applies_to      text NOT NULL DEFAULT 'ALL' CHECK (applies_to IN ('ALL', 'USAGE', 'BASE_FEE')),
    valid_from      date NOT NULL,
    valid_to        date,                                        -- exclusive; null = open
    description     text NOT NULL,
    PRIMARY KEY (contract_id, discount_id),
    CHECK (kind <> 'PERCENT' OR value <= 100),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);

-- Prepaid credit bought by a customer; invoices consume it (after tax) until it is used up.
CREATE TABLE credit_grants (
    grant_id        text PRIMARY KEY,
    contract_id     text NOT NULL REFERENCES contracts (contract_id),
    amount          numeric(20, 4) NOT NULL CHECK (amount > 0),
    currency        char(3) NOT NULL,
    granted_on      date NOT NULL,
    description     text NOT NULL
);

-- Daily usage per (day, project, chain), deduplicated on request_id inside ClickHouse.
CREATE TABLE usage_rollups (
    day                 date NOT NULL,
    org_id              text COLLATE "C" NOT NULL,   -- ids compare bytewise: fast, locale-proof
    project_id          text COLLATE "C" NOT NULL,
    chain               text COLLATE "C" NOT NULL,
    requests            bigint NOT NULL CHECK (requests > 0),
    successful_requests bigint NOT NULL CHECK (successful_requests >= 0),
    error_requests      bigint NOT NULL CHECK (error_requests >= 0),
    bytes_out           bigint NOT NULL CHECK (bytes_out >= 0),
    -- Key order matches the order rows are written in, so COPY appends to the index.
    PRIMARY KEY (day, org_id, project_id, chain),
    CHECK (successful_requests + error_requests = requests)
) PARTITION BY RANGE (day);
-- One partition per month, created by the rollup step when a month is first rolled up. Re-running
-- a whole month truncates its partition instead of deleting millions of rows one by one.

-- For orgs billed in another timezone: the part of each UTC day's usage sent before the local
-- midnight inside that day, so usage can be attributed to the customer's calendar days. Meter
-- columns are added like those of usage_rollups.
CREATE TABLE usage_before_local_midnight (
    day             date NOT NULL,
    org_id          text COLLATE "C" NOT NULL,
    project_id      text COLLATE "C" NOT NULL,
    chain           text COLLATE "C" NOT NULL,
    timezone        text NOT NULL,
    requests        bigint NOT NULL CHECK (requests >= 0),
    PRIMARY KEY (day, org_id, project_id, chain)
);

-- One row per rolled-up day: proves the day was read (a day with no row was never rolled up) and
-- keeps the ClickHouse source totals the rollups must reconcile to.
CREATE TABLE usage_rollup_days (
    day                 date PRIMARY KEY,
    raw_rows            bigint NOT NULL,   -- rows in requests_raw for the day, duplicates included
    duplicate_rows      bigint NOT NULL,   -- copies of a request_id already seen, not counted
    quarantined_rows    bigint NOT NULL,   -- rows without org, project or known chain (see quarantined_usage)
    requests            bigint NOT NULL,
    bytes_out           bigint NOT NULL,
    source_engine       text NOT NULL,     -- 'chdb <version>' or 'clickhouse <version>'
    source_query_sha256 char(64) NOT NULL, -- SHA-256 of the exact SQL text that produced the rows
    dagster_run_id      text,
    rolled_up_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Raw rows that cannot be billed (no org, no project, unknown chain), per day and reason.
CREATE TABLE quarantined_usage (
    day             date NOT NULL,
    reason          text NOT NULL,
    org_id          text NOT NULL,
    project_id      text NOT NULL,
    chain           text NOT NULL,
    raw_rows        bigint NOT NULL CHECK (raw_rows > 0),
    PRIMARY KEY (day, reason, org_id, project_id, chain)
);

-- Priced usage per contract and month, unrounded; invoice lines round these once.
CREATE TABLE rated_charges (
    period_start    date NOT NULL,
    charge_id       text NOT NULL,
    contract_id     text NOT NULL REFERENCES contracts (contract_id),
    position        integer NOT NULL,            -- line order on the invoice
    kind            text NOT NULL CHECK (kind IN ('BASE_FEE', 'USAGE', 'OVERAGE', 'USAGE_INFO', 'TRUE_UP', 'DISCOUNT')),
    chain           text,
    meter           text,
    description     text NOT NULL,
    quantity        numeric NOT NULL,            -- requests, GB (decimal) or units
    unit_price      numeric NOT NULL,            -- effective price of one unit (amount / quantity)
    amount          numeric NOT NULL,            -- exact and unrounded; the invoice line rounds it once
    currency        char(3) NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}', -- how it was computed: tiers, shares, proration
    dagster_run_id  text,
    rated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (period_start, charge_id)
);
CREATE INDEX rated_charges_contract_idx ON rated_charges (contract_id, period_start);

-- One row per rated month: lets invoicing refuse to draft from charges older than their usage.
CREATE TABLE rating_runs (
    period_start    date PRIMARY KEY,
    contracts       integer NOT NULL,
    charges         integer NOT NULL,
    unrated_requests bigint NOT NULL,
    dagster_run_id  text,
    rated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Usage caps crossed in a month: alerts for the account team, never charges.
CREATE TABLE usage_alerts (
    period_start    date NOT NULL,
    contract_id     text NOT NULL REFERENCES contracts (contract_id),
    meter           text NOT NULL,
    level           text NOT NULL CHECK (level IN ('SOFT', 'HARD')),
    cap             bigint NOT NULL,
    used            bigint NOT NULL,
    PRIMARY KEY (period_start, contract_id, meter)
);

-- Usage that no contract covers: never dropped, kept here and counted until someone bills it.
CREATE TABLE unrated_usage (
    period_start    date NOT NULL,
    org_id          text NOT NULL,
    chain           text NOT NULL,
    requests        bigint NOT NULL,
    bytes_out       bigint NOT NULL,
    reason          text NOT NULL,
    PRIMARY KEY (period_start, org_id, chain)
);

-- FX rates as published (TCMB, ECB); an invoice points at the snapshot it used.
CREATE TABLE fx_rates (
    rate_date       date NOT NULL,
    source          text NOT NULL CHECK (source IN ('TCMB', 'ECB')),
    base_currency   char(3) NOT NULL,
    quote_currency  char(3) NOT NULL,
    kind            text NOT NULL,               -- ForexBuying, ForexSelling, reference
    unit            integer NOT NULL DEFAULT 1,  -- TCMB quotes JPY per 100
    rate            numeric(20, 10) NOT NULL CHECK (rate > 0),
    bulletin_sha256 char(64),
    fetched_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rate_date, source, base_currency, quote_currency, kind)
);

CREATE TABLE invoices (
    invoice_id      text PRIMARY KEY,            -- '<contract>:<YYYY-MM>:v<version>'
    contract_id     text NOT NULL REFERENCES contracts (contract_id),
    org_id          text NOT NULL,
    period_start    date NOT NULL,
    period_end      date NOT NULL,
    version         integer NOT NULL CHECK (version >= 1),
    status          text NOT NULL CHECK (status IN ('DRAFT', 'ISSUED', 'PAID', 'VOID', 'SUPERSEDED')),
    currency        char(3) NOT NULL,
    subtotal        numeric(20, 4) NOT NULL,
    tax_rate        numeric(6, 4) NOT NULL,
    tax             numeric(20, 4) NOT NULL,
    credits_applied numeric(20, 4) NOT NULL DEFAULT 0 CHECK (credits_applied >= 0),  -- prepaid credit used
    total           numeric(20, 4) NOT NULL,
    fx_snapshot_ref text,                        -- the fx_rates row(s) used, null when none was needed
    contract_doc_sha256 char(64),                -- the signed contract this invoice rests on
    pdf_url         text,
    dagster_run_id  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    issued_at       timestamptz,
    UNIQUE (contract_id, period_start, version),
    CHECK (period_end > period_start),
    CHECK (total = subtotal + tax - credits_applied)
);
CREATE INDEX invoices_period_idx ON invoices (period_start, status);

CREATE TABLE invoice_lines (
    invoice_id      text NOT NULL REFERENCES invoices (invoice_id) ON DELETE CASCADE,
    line_no         integer NOT NULL,
    charge_id       text NOT NULL,               -- the rated charge this line rounds
    description     text NOT NULL,
    quantity        numeric NOT NULL,
    unit_price      numeric NOT NULL,
    amount          numeric(20, 4) NOT NULL,     -- rounded once to the currency's minor unit
    currency        char(3) NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);

-- Append-only audit ledger. Hash chaining, double entry and the triggers that forbid changes
-- arrive with the proof milestone; the table and its columns are fixed now.
CREATE TABLE ledger (
    entry_id        bigserial PRIMARY KEY,
    tx_id           uuid NOT NULL,
    entity_type     text NOT NULL,
    entity_id       text NOT NULL,
    event           text NOT NULL,
    account         text NOT NULL,
    amount          numeric(20, 4) NOT NULL,
    currency        char(3) NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    prev_hash       char(64),
    hash            char(64) NOT NULL
);

-- What must be sent to Stripe or Parasut, written in the same transaction as the invoice it
-- sends, so a crash can never lose or duplicate a send.
CREATE TABLE sink_outbox (
    outbox_id       bigserial PRIMARY KEY,
    sink            text NOT NULL CHECK (sink IN ('STRIPE', 'PARASUT')),
    invoice_id      text NOT NULL REFERENCES invoices (invoice_id),
    idempotency_key text NOT NULL UNIQUE,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    external_id     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
