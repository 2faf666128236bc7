"""Bulk writes into PostgreSQL through COPY, fed by Arrow's C++ CSV writer (no Python row loop)."""

from __future__ import annotations

import io

import psycopg
from psycopg import sql
import pyarrow as pa
import pyarrow.csv as pacsv

_CHUNK_ROWS = 500_000


def copy_arrow(conn: psycopg.Connection, table: str | sql.Identifier, data: pa.Table, freeze: bool = False) -> int:
    """COPY an Arrow table into ``table``; its column names must match the table's columns. With
    ``freeze``, the rows are written frozen (the table must have been created or truncated in this
    transaction)."""
    if data.num_rows == 0:
        return 0
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv{})").format(
        table if isinstance(table, sql.Identifier) else sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, data.column_names)), sql.SQL(", FREEZE" if freeze else ""))
    with conn.cursor().copy(statement) as copy:
        for offset in range(0, data.num_rows, _CHUNK_ROWS):
            buf = io.BytesIO()
            pacsv.write_csv(data.slice(offset, _CHUNK_ROWS), buf,
                            pacsv.WriteOptions(include_header=False, quoting_style="needed"))
            copy.write(buf.getvalue())
    return data.num_rows
