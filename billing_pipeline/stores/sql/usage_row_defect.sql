-- Why a raw row cannot be billed, as far as the row alone tells ('' when it can): the first reason
-- that applies. ClickHouse computes it once, when the row is inserted, into requests_raw.row_defect
-- (ensure_schema adds the column and, when this rule changes, recomputes it for the rows already
-- stored), so the month's queries read one byte a row instead of matching ids against patterns
-- four times a close. Whether the chain is known depends on the catalog, so usage_billable.sql
-- checks that when it reads. Keep in step with usage_quarantine_reason.sql.
multiIf(
    request_id = '', 'missing_request_id',
    org_id = '', 'missing_org_id',
    project_id = '', 'missing_project_id',
    chain = '', 'missing_chain',
    length(request_id) > 256, 'oversized_request_id',
    length(org_id) > 256, 'oversized_org_id',
    length(project_id) > 256, 'oversized_project_id',
    NOT isValidUTF8(org_id), 'invalid_utf8_org_id',
    NOT isValidUTF8(project_id), 'invalid_utf8_project_id',
    match(org_id, '[\\x00-\\x1F\\x7F]'), 'control_characters_in_org_id',
    match(project_id, '[\\x00-\\x1F\\x7F]'), 'control_characters_in_project_id',
    NOT match(org_id, '^[A-Za-z0-9_.:-]+$'), 'invalid_characters_in_org_id',
    NOT match(project_id, '^[A-Za-z0-9_.:-]+$'), 'invalid_characters_in_project_id',
    http_status NOT BETWEEN 100 AND 599, 'invalid_http_status',
    bytes_out >= 9223372036854775808, 'negative_bytes_out',
    bytes_out > 100000000000, 'absurd_bytes_out',
    '')
