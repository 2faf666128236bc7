"""Bulk writes into PostgreSQL through COPY, fed by Arrow's C++ CSV writer (no Python row loop)."""

from __future__ import annotations

import io

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv

_CHUNK_ROWS = 500_000


def copy_arrow(conn: psycopg.Connection, table: str, data: pa.Table) -> int:
    """COPY an Arrow table into ``table``; its column names must match the table's columns."""
    if data.num_rows == 0:
        return 0
    columns = ", ".join(data.column_names)
    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT csv)") as copy:
        for offset in range(0, data.num_rows, _CHUNK_ROWS):
            buf = io.BytesIO()
            pacsv.write_csv(data.slice(offset, _CHUNK_ROWS), buf,
                            pacsv.WriteOptions(include_header=False, quoting_style="needed"))
            copy.write(buf.getvalue())
    return data.num_rows
