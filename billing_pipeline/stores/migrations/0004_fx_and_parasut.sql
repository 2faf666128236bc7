-- Turkish invoices: the TCMB rate each one used, lira amounts beside the source amounts, KDV per
-- line, and what Parasut holds for them.

-- Every FX document fetched, byte for byte: the SHA-256 on a snapshot proves which file a rate came from.
CREATE TABLE fx_documents (
    sha256      char(64) PRIMARY KEY,
    source      text NOT NULL CHECK (source IN ('TCMB', 'ECB')),
    url         text NOT NULL,
    body        bytea NOT NULL,
    fetched_at  timestamptz NOT NULL
);

-- The rate a month's invoices in one currency use (TRY per 1 unit), or why there is none.
CREATE TABLE fx_snapshots (
    period_start        date NOT NULL,
    currency            char(3) NOT NULL,
    issue_date          date NOT NULL,           -- the invoices' issue date: the first day after the month
    status              text NOT NULL CHECK (status IN ('OK', 'FAILED')),
    rate                numeric(20, 10) CHECK (rate > 0),
    source              text CHECK (source IN ('TCMB', 'TCMB_LAST_KNOWN')),
    bulletin_date       date,
    fetched_at          timestamptz,
    raw_sha256          char(64),
    estimated           boolean NOT NULL DEFAULT false,  -- no source answered: the last known rate
    ecb_rate            numeric(20, 10),         -- ECB cross rate TRY per unit, for the cross-check
    ecb_date            date,
    divergence          numeric(12, 6),
    divergence_flagged  boolean NOT NULL DEFAULT false,
    failure             text,
    PRIMARY KEY (period_start, currency),
    CHECK ((status = 'OK') = (rate IS NOT NULL))
);

ALTER TABLE contracts ADD COLUMN vat_rate numeric(6, 4) CHECK (vat_rate >= 0 AND vat_rate < 1);  -- KDV override (TR)
ALTER TABLE contracts ADD COLUMN e_document_scenario text NOT NULL DEFAULT 'basic'
    CHECK (e_document_scenario IN ('basic', 'commercial'));  -- e-Fatura scenario (TEMELFATURA / TICARIFATURA)

ALTER TABLE invoices
    ADD COLUMN issue_date date,
    ADD COLUMN source_currency char(3),             -- the contract's currency when the invoice was converted
    ADD COLUMN fx_rate numeric(20, 10),
    ADD COLUMN fx_estimated boolean NOT NULL DEFAULT false,
    ADD COLUMN e_document_kind text CHECK (e_document_kind IN ('E_FATURA', 'E_ARSIV')),
    ADD COLUMN e_document_id text,
    ADD COLUMN pdf_sha256 char(64),
    ADD COLUMN pdf_location text,
    ADD COLUMN appendix_location text;

ALTER TABLE invoice_lines
    ADD COLUMN source_amount numeric(20, 4),        -- the line in the contract's currency, rounded
    ADD COLUMN source_currency char(3),
    ADD COLUMN fx_rate numeric(20, 10),
    ADD COLUMN vat_rate numeric(6, 4),
    ADD COLUMN vat_amount numeric(20, 4);

-- Parasut's OAuth tokens: every refresh returns a new refresh token, which must replace the old one.
CREATE TABLE parasut_tokens (
    company_id          text PRIMARY KEY,
    refresh_token       text NOT NULL,
    rotated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE parasut_contacts (
    org_id          text PRIMARY KEY REFERENCES customers (org_id),
    contact_id      text NOT NULL,
    tax_number      text NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now()
);
