-- Why a row that usage_billable refuses cannot be billed: the first reason that applies. Every way
-- of failing usage_billable has a reason here; 'unexplained' would mean the two drifted apart.
-- Spliced in by an include comment (see sql_text).
multiIf(
    requests_raw.request_id = '', 'missing_request_id',
    requests_raw.org_id = '', 'missing_org_id',
    requests_raw.project_id = '', 'missing_project_id',
    requests_raw.chain = '', 'missing_chain',
    length(requests_raw.request_id) > 256, 'oversized_request_id',
    length(requests_raw.org_id) > 256, 'oversized_org_id',
    length(requests_raw.project_id) > 256, 'oversized_project_id',
    NOT isValidUTF8(requests_raw.org_id), 'invalid_utf8_org_id',
    NOT isValidUTF8(requests_raw.project_id), 'invalid_utf8_project_id',
    match(requests_raw.org_id, '[\\x00-\\x1F\\x7F]'), 'control_characters_in_org_id',
    match(requests_raw.project_id, '[\\x00-\\x1F\\x7F]'), 'control_characters_in_project_id',
    NOT match(requests_raw.org_id, '^[A-Za-z0-9_.:-]+$'), 'invalid_characters_in_org_id',
    NOT match(requests_raw.project_id, '^[A-Za-z0-9_.:-]+$'), 'invalid_characters_in_project_id',
    NOT has({known_chains:Array(String)}, requests_raw.chain), 'unknown_chain',
    requests_raw.http_status NOT BETWEEN 100 AND 599, 'invalid_http_status',
    requests_raw.bytes_out >= 9223372036854775808, 'negative_bytes_out',
    requests_raw.bytes_out > 100000000000, 'absurd_bytes_out',
    'unexplained')
