-- The request keys delivered more than once in a rollup window and its lookback: the candidates
-- usage_duplicates.sql looks for copies among, spliced in where its copy candidates marker stands.
-- One hash table over every request key of the window and its lookback finds them. In the chdb
-- process that table is our memory: at a billion requests a month a day and its lookback hold
-- 61 M keys, and the table took about 1.1 GiB even spilling past 512 MiB. So there a window that
-- big is done in passes, each over one share of the key space (the key pass marker), each
-- inserted into a small table the copies' query then reads (steps/usage_copies.py, copy_key_passes).
SELECT request_key
FROM requests_raw
WHERE timestamp >= {window_start:DateTime64(3, 'UTC')} - toIntervalHour({dedup_lookback_hours:UInt32})
  AND timestamp < {window_end:DateTime64(3, 'UTC')}
  AND (/* include usage_billable */) /* row filter */ /* key pass */
GROUP BY request_key
HAVING count() > 1
