"""The analysts' dbt project builds on the billing database and reports revenue per chain."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from dbt.cli.main import dbtRunner

from billing_pipeline.close import close_month
from billing_pipeline.domain.periods import Period

DBT_DIR = Path(__file__).resolve().parent.parent / "dbt_models"


def test_revenue_per_chain(october, billing_defs, instance, monkeypatch, tmp_path):
    close_month(instance, Period.parse_month("2026-10"), definitions=billing_defs)
    url = urlsplit(october)
    monkeypatch.setenv("BILLING_DBT_HOST", url.hostname or "127.0.0.1")
    monkeypatch.setenv("BILLING_DBT_PORT", str(url.port or 5432))
    monkeypatch.setenv("BILLING_DBT_USER", url.username or "postgres")
    monkeypatch.setenv("BILLING_DBT_DBNAME", url.path.strip("/"))
    result = dbtRunner().invoke(["build", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
                                 "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
                                 "--quiet"])
    assert result.success, result.exception
    with psycopg.connect(october) as conn:
        rows = conn.execute("""SELECT chain, currency, revenue, requests FROM analytics_marts.revenue_per_chain
                               ORDER BY currency, chain""").fetchall()
    assert rows == [
        ("all chains", "EUR", Decimal("500.7500"), Decimal("0")),
        ("base-mainnet", "EUR", Decimal("0.0000"), Decimal("5")),
        ("eth-mainnet", "EUR", Decimal("0.0000"), Decimal("8")),
        ("all chains", "TRY", Decimal("25000.0000"), Decimal("0")),
        ("eth-mainnet", "TRY", Decimal("0.0000"), Decimal("2")),
        ("bsc-mainnet", "USD", Decimal("0.0500"), Decimal("3")),
        ("eth-mainnet", "USD", Decimal("0.1100"), Decimal("7")),
        ("polygon-mainnet", "USD", Decimal("0.0300"), Decimal("31")),
    ]
