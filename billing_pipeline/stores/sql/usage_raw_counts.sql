-- Raw rows per UTC day now, to compare with what each day's rollup saw (late arrivals).
SELECT toDate(timestamp) AS day, count() AS raw_rows
FROM requests_raw
WHERE timestamp >= {since:DateTime64(3, 'UTC')} AND timestamp < {until:DateTime64(3, 'UTC')}
GROUP BY day
ORDER BY day
