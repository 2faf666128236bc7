-- Deterministic synthetic gateway log, generated inside ClickHouse (no Python row loop).
-- (ClickHouse's leftPad cuts a longer string to the length: ids pad to at least 4 and 5 digits.)
-- Every value derives from cityHash64(seed, n), so the same parameters give the same rows on any
-- ClickHouse. Skew: project = floor(P * u^3), so a few projects (and their orgs) carry most traffic
-- and a long tail sends little; chains are skewed the same way (u^1.5). About 2% of responses are
-- errors, and dup_per_mille of requests are delivered twice, up to 5 s apart (sometimes across
-- midnight), to exercise deduplication. Each batch is inserted as one block, sorted once into one
-- part per month: a load that left a part per million rows would keep background merges busy
-- for as long again as the load (about 40 GB rewritten at 1B rows).
INSERT INTO requests_raw
    (timestamp, request_id, org_id, project_id, api_key_id, chain, method, http_status, bytes_out, latency_ms, source_ip)
SELECT
    {start:DateTime64(3, 'UTC')} + toIntervalMillisecond(ts_ms + copy * (h5 % 5000)) AS timestamp,
    concat(lower(hex(h1)), lower(hex(h4)))                                           AS request_id,
    concat('org_', leftPad(toString(org), greatest(4, length(toString(org))), '0'))  AS org_id,
    concat('prj_', leftPad(toString(project), greatest(5, length(toString(project))), '0')) AS project_id,
    concat('key_', leftPad(toString(project), greatest(5, length(toString(project))), '0'), '_',
           toString(h3 % 3))                                                         AS api_key_id,
    {chains:Array(String)}[1 + chain_idx]                                            AS chain,
    multiIf(m < 30, 'eth_call', m < 50, 'eth_getBalance', m < 65, 'eth_blockNumber', m < 75, 'eth_getLogs',
            m < 85, 'eth_getTransactionReceipt', m < 93, 'eth_sendRawTransaction', m < 98, 'eth_chainId',
            'debug_traceTransaction')                                                AS method,
    toUInt16(multiIf(e < 10, 429, e < 15, 500, e < 18, 400, e < 20, 503, 200))       AS http_status,
    toUInt64(multiIf(m >= 65 AND m < 75, 2000 + h4 % 20000, m >= 98, 5000 + h4 % 50000, 100 + h4 % 900)) AS bytes_out,
    toUInt32(5 + h5 % 200 + if(m >= 98, 400, 0))                                      AS latency_ms,
    toIPv6(IPv4NumToString(toUInt32(h2 % 4294967296)))                               AS source_ip
FROM
(
    SELECT
        h1, h2, h3, h4, h5,
        h3 % ({days:UInt32} * 86400000)                                              AS ts_ms,
        toUInt32(floor({projects:UInt32} * pow((h2 % 1000000007) / 1000000007, 3)))  AS project,
        project % {orgs:UInt32}                                                      AS org,
        toUInt32(floor(length({chains:Array(String)}) * pow((h4 % 1000000007) / 1000000007, 1.5))) AS chain_idx,
        h5 % 100                                                                     AS m,
        intDiv(h5, 1048576) % 1000                                                           AS e,
        if(intDiv(h5, 1099511627776) % 1000 < {dup_per_mille:UInt32}, [0, 1], [0])                  AS copies
    FROM
    (
        SELECT
            cityHash64({seed:UInt64}, number) AS h1,
            cityHash64(h1, 1) AS h2, cityHash64(h1, 2) AS h3, cityHash64(h1, 3) AS h4, cityHash64(h1, 4) AS h5
        FROM numbers({offset:UInt64}, {events:UInt64})
    )
)
ARRAY JOIN copies AS copy
SETTINGS min_insert_block_size_rows = 100000000, min_insert_block_size_bytes = 8000000000
