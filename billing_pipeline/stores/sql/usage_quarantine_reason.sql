-- Why a row that usage_billable refuses cannot be billed: the first reason that applies. Every way
-- of failing usage_billable has a reason here; 'unexplained' would mean the two drifted apart.
-- The row's own defects were decided at insert (usage_row_defect.sql); the id defects come before
-- an unknown chain, an impossible status or byte count after it.
-- Spliced in by an include comment (see sql_text).
multiIf(
    requests_raw.row_defect NOT IN ('', 'invalid_http_status', 'negative_bytes_out', 'absurd_bytes_out'),
        requests_raw.row_defect,
    requests_raw.chain NOT IN {known_chains:Array(String)}, 'unknown_chain',
    requests_raw.row_defect != '', requests_raw.row_defect,
    'unexplained')
