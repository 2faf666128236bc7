-- Deliveries in [window_start, window_end) that repeat a request_id already delivered, per
-- (day, org, project, chain): what usage_rollups.sql over-counts.
--
-- Additive meters (SUM, COUNT) of catalog/meters.yaml are added where the marker stands, so the
-- copies' share of them is subtracted too.
--
-- Deduplication is on request_id alone. The copies of one request are ordered by their full
-- (timestamp, org, project, chain, status, bytes, method, latency, key) tuple; the first decides
-- the day and attributes the request is billed with, every other copy is a duplicate. Copies are
-- looked for from dedup_lookback_hours before the window, so a copy re-sent after midnight is not
-- counted again on the next day. Candidate ids are found by request_key, the 64-bit hash of
-- request_id stored at insert (a fixed-width column: the pass over the window reads 8 bytes a row
-- and keeps a small hash table); a hash collision only sends a unique request down this exact
-- path, where grouping is on the request_id itself, so it can never merge two requests.
SELECT
    toDate(copy.1)                  AS day,
    copy.2                          AS org_id,
    copy.3                          AS project_id,
    copy.4                          AS chain,
    count()                         AS requests,
    countIf(copy.5 < 400)           AS successful_requests,
    countIf(copy.5 >= 400)          AS error_requests,
    sum(copy.6)                     AS bytes_out /* declared meters */
FROM
(
    SELECT arrayJoin(arrayPopFront(arraySort(
               groupArray((timestamp, org_id, project_id, chain, http_status, bytes_out, method, latency_ms,
                           api_key_id))))) AS copy
    FROM requests_raw
    WHERE timestamp >= {window_start:DateTime64(3, 'UTC')} - toIntervalHour({dedup_lookback_hours:UInt32})
      AND timestamp < {window_end:DateTime64(3, 'UTC')}
      AND (/* include usage_billable */) /* row filter */
      AND request_key IN (/* copy candidates */)
    GROUP BY request_id
)
WHERE copy.1 >= {window_start:DateTime64(3, 'UTC')} /* copy filter */
GROUP BY day, org_id, project_id, chain
-- The copies' candidates (usage_copy_candidates.sql, in place of the marker: the query itself, or
-- the table its passes filled) are found by one hash table over every request key of the window
-- and its lookback. Past 512 MiB ClickHouse spills it to disk in buckets and merges them one at a
-- time: a billion requests a month make 60 M keys for a day and its lookback: spilled past 1 GiB
-- they took 1,175 MiB and 32.0 s, past 512 MiB 757 MiB and 29.5 s, past 256 MiB 599 MiB and
-- 37.3 s. A three-day chunk of 10k contracts' 100M requests (13 M keys) stays under 512 MiB;
-- their six-day chunks (21 M keys) spill, and still roll the month up faster (steps/usage_chunks.py).
-- (tests/test_rollup_streaming.py checks a spilled run gives the same rows.)
SETTINGS max_bytes_before_external_group_by = 536870912
