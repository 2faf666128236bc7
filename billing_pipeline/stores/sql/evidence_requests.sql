-- Proof of delivery for one org and a time range, as the rollups bill it. Billable rows
-- (usage_billable.sql): each request once, the first copy by the rollups' full tuple deciding its
-- time (copies are looked for from {lookback_start}, a day before the range, so a request first
-- delivered before the range is not in it). Rows that cannot be billed (quarantined by the
-- rollups, each raw row counted) are listed too, every one, with billed = false: served, not billed.
SELECT timestamp, request_id, project_id, chain, method, http_status, bytes_out,
       -- IPv4 clients are stored IPv4-mapped (::ffff:a.b.c.d): shown as they connected
       replaceRegexpOne(IPv6NumToString(source_ip), '^::ffff:([0-9.]+)$', '\\1') AS source_ip,
       billed
FROM
(
    SELECT *, true AS billed
    FROM
    (
        SELECT *
        FROM requests_raw
        WHERE org_id = {org_id:String}
          AND timestamp >= {lookback_start:DateTime64(3, 'UTC')} AND timestamp < {end:DateTime64(3, 'UTC')}
          AND (/* include usage_billable */)
        ORDER BY request_id, timestamp, org_id, project_id, chain, http_status, bytes_out, method, latency_ms,
                 api_key_id
        LIMIT 1 BY request_id
    )
    WHERE timestamp >= {start:DateTime64(3, 'UTC')}
    UNION ALL
    SELECT *, false AS billed
    FROM requests_raw
    WHERE org_id = {org_id:String}
      AND timestamp >= {start:DateTime64(3, 'UTC')} AND timestamp < {end:DateTime64(3, 'UTC')}
      AND NOT (/* include usage_billable */)
)
ORDER BY timestamp, request_id, billed DESC
