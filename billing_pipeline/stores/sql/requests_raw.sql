-- What the API gateway logs per request. One row per delivery: a request re-sent by the log
-- shipper appears twice with the same request_id (maybe another timestamp); rollups count it once.
CREATE TABLE IF NOT EXISTS requests_raw
(
    timestamp    DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    request_id   String,
    org_id       LowCardinality(String),
    project_id   LowCardinality(String),
    api_key_id   LowCardinality(String),
    chain        LowCardinality(String),
    method       LowCardinality(String),
    http_status  UInt16,
    bytes_out    UInt64,
    latency_ms   UInt32,
    source_ip    IPv6
    -- ensure_schema adds two columns ClickHouse computes at insert (the gateway sends neither):
    -- request_key and row_defect (stores/clickhouse.py says why)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (toDate(timestamp), org_id, project_id, chain, timestamp)
