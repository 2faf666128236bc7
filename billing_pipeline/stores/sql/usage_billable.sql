-- Whether a raw row of requests_raw can be billed: the one rule usage_rollups, usage_duplicates
-- and usage_direct_totals bill by and usage_source_totals counts the others by (as quarantined
-- rows, which usage_quarantine lists with usage_quarantine_reason: keep the two in step). Spliced in
-- by an include comment (see sql_text); columns are qualified, as the rollup queries alias
-- aggregates with column names.
--
-- The gateway generates every id: a request id of 1 to 256 bytes (any bytes: it is only compared);
-- org and project ids of 1 to 256 letters, digits and _ . : - (SQL in an id is only ever data, but
-- never a customer's project; invalid UTF-8 or a NUL could not even be stored in PostgreSQL); a
-- chain of catalog/chains.yaml; an HTTP status of 100..599; bytes_out is UInt64, where a negative
-- value wraps above 2^63, and no RPC response is 100 GB. All but the chain is decided once, at
-- insert (usage_row_defect.sql, stored in row_defect).
requests_raw.row_defect = ''
AND requests_raw.chain IN {known_chains:Array(String)}
