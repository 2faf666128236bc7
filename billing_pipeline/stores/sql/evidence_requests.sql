-- Proof of delivery for one org and a time range: each request once, the first copy by its full
-- tuple deciding its time (as the rollups bill it: copies are looked for from {lookback_start},
-- a day before the range, so a request first delivered before the range is not in it).
SELECT timestamp, request_id, project_id, chain, method, http_status, bytes_out,
       -- IPv4 clients are stored IPv4-mapped (::ffff:a.b.c.d): shown as they connected
       replaceRegexpOne(IPv6NumToString(source_ip), '^::ffff:([0-9.]+)$', '\\1') AS source_ip
FROM
(
    SELECT *
    FROM requests_raw
    WHERE org_id = {org_id:String}
      AND timestamp >= {lookback_start:DateTime64(3, 'UTC')} AND timestamp < {end:DateTime64(3, 'UTC')}
    ORDER BY request_id, timestamp, project_id, chain, http_status, bytes_out
    LIMIT 1 BY request_id
)
WHERE timestamp >= {start:DateTime64(3, 'UTC')}
ORDER BY timestamp, request_id
