-- Rows of requests_raw that no daily rollup will ever read, because their timestamp cannot be the
-- time a request was served: stamped after {not_after} (the check's clock plus a tolerance for
-- gateway clock drift) or before {not_before} (a missing timestamp is stored as 1970-01-01). They
-- are counted here, by reason, with the range of their timestamps; the table's sort key starts
-- with the day, so ClickHouse reads only the parts holding such days.
SELECT
    if(timestamp < {not_before:DateTime64(3, 'UTC')}, 'ancient_timestamp', 'future_timestamp') AS reason,
    count()        AS raw_rows,
    min(timestamp) AS earliest,
    max(timestamp) AS latest
FROM requests_raw
WHERE timestamp < {not_before:DateTime64(3, 'UTC')} OR timestamp > {not_after:DateTime64(3, 'UTC')}
GROUP BY reason
ORDER BY reason
