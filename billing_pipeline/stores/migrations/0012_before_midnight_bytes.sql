-- The bytes of each UTC day's part before the local midnight of customers billed in other
-- timezones: with the requests, what usage no contract covers is counted on the customer's own
-- days, as it is billed (unrated_usage counts bytes too). Zero on rows rolled up before the column
-- existed; re-running those days fills it.
ALTER TABLE usage_before_local_midnight ADD COLUMN bytes_out bigint NOT NULL DEFAULT 0 CHECK (bytes_out >= 0);
