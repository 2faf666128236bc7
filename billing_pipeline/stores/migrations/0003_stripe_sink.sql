-- Issuing through Stripe: how each contract is collected, where each invoice went, what was sent.

-- How Stripe collects a contract's invoices. send_invoice emails a hosted invoice due in
-- days_until_due days; charge_automatically charges the customer's default payment method.
ALTER TABLE contracts
    ADD COLUMN collection_method text NOT NULL DEFAULT 'send_invoice'
        CHECK (collection_method IN ('send_invoice', 'charge_automatically')),
    ADD COLUMN days_until_due integer NOT NULL DEFAULT 30 CHECK (days_until_due BETWEEN 0 AND 365),
    ADD COLUMN stripe_tax boolean NOT NULL DEFAULT false;  -- let Stripe Tax compute the tax

-- ISSUING: the sink has started sending this version; it is frozen (a re-draft takes the next
-- version) until it is ISSUED, or returns to DRAFT when nothing reached the provider.
ALTER TABLE invoices DROP CONSTRAINT invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check
    CHECK (status IN ('DRAFT', 'ISSUING', 'ISSUED', 'PAID', 'VOID', 'SUPERSEDED'));
ALTER TABLE invoices
    ADD COLUMN sink text CHECK (sink IN ('STRIPE', 'PARASUT')),
    ADD COLUMN external_id text,                 -- Stripe invoice id (in_...)
    ADD COLUMN external_customer_id text,        -- Stripe customer id (cus_...)
    ADD COLUMN external_number text,             -- the number the customer sees
    ADD COLUMN hosted_url text,
    ADD COLUMN external_status text,             -- the provider's own status (open, paid, void...)
    ADD COLUMN external_subtotal numeric(20, 4), -- the provider's figures, for reconciliation
    ADD COLUMN external_tax numeric(20, 4),
    ADD COLUMN external_total numeric(20, 4),
    ADD COLUMN external_amount_due numeric(20, 4),
    ADD COLUMN sink_error text,                  -- why this invoice stopped, null when it did not
    ADD COLUMN sink_error_at timestamptz,
    ADD COLUMN paid_at timestamptz;
CREATE UNIQUE INDEX invoices_external_idx ON invoices (sink, external_id) WHERE external_id IS NOT NULL;

-- One Stripe customer per org, found or created once and kept in step with our metadata.
CREATE TABLE stripe_customers (
    org_id          text PRIMARY KEY REFERENCES customers (org_id),
    customer_id     text NOT NULL UNIQUE,
    metadata        jsonb NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now()
);

-- The outbox records every request before it is sent (PENDING), then its answer (SENT) or its
-- refusal (FAILED); a PENDING row after a crash means "maybe sent": look before creating again.
-- DRY_RUN rows are the exact requests a dry run would have sent.
ALTER TABLE sink_outbox ALTER COLUMN invoice_id DROP NOT NULL;  -- customer requests serve an org
ALTER TABLE sink_outbox DROP CONSTRAINT sink_outbox_status_check;
ALTER TABLE sink_outbox ADD CONSTRAINT sink_outbox_status_check
    CHECK (status IN ('PENDING', 'SENT', 'FAILED', 'DRY_RUN'));
ALTER TABLE sink_outbox DROP CONSTRAINT sink_outbox_invoice_id_fkey;
-- Only DRAFT invoices are ever deleted (replaced), and those hold only DRY_RUN rows.
ALTER TABLE sink_outbox ADD CONSTRAINT sink_outbox_invoice_id_fkey
    FOREIGN KEY (invoice_id) REFERENCES invoices (invoice_id) ON DELETE CASCADE;
ALTER TABLE sink_outbox
    ADD COLUMN response jsonb,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX sink_outbox_invoice_idx ON sink_outbox (invoice_id);
CREATE INDEX sink_outbox_open_idx ON sink_outbox (status, updated_at) WHERE status IN ('PENDING', 'FAILED');

-- Every Stripe event applied, by id: an event seen twice (poll and webhook, or a replay) is
-- applied once.
CREATE TABLE stripe_events (
    event_id            text PRIMARY KEY,
    event_type          text NOT NULL,
    stripe_invoice_id   text,
    invoice_id          text REFERENCES invoices (invoice_id),
    created             timestamptz NOT NULL,
    received_via        text NOT NULL CHECK (received_via IN ('POLL', 'WEBHOOK')),
    outcome             text NOT NULL,
    processed_at        timestamptz NOT NULL DEFAULT now()
);
