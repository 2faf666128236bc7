"""The Dagster instance of this product: run/event/schedule storage in PostgreSQL.

``prepare_instance`` writes ``<state dir>/dagster/dagster.yaml`` and points DAGSTER_HOME at it. The
storage URL is read from an environment variable at load time, so no password is written to disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from . import settings
from .stores.postgres import dagster_database_url, sqlalchemy_url

STORAGE_URL_ENV = "BILLING_DAGSTER_STORAGE_URL"

_DAGSTER_YAML = """\
# Written by `billing`; edits are overwritten. Storage URL comes from ${env} at load time.
storage:
  postgres:
    postgres_url:
      env: {env}
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {max_runs}
run_monitoring:
  enabled: true
# The product's own log lines (a long rollup's progress day by day, a run waiting for another run
# of its partition) go into each run's event log, where the data team watches it in the UI.
python_logs:
  managed_python_loggers:
    - billing_pipeline
  python_log_level: INFO
telemetry:
  enabled: false
nux:
  enabled: false
"""


def prepare_instance(billing_url: str) -> Path:
    """Write dagster.yaml for storage next to ``billing_url``; returns DAGSTER_HOME."""
    home = settings.state_dir() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    os.environ[STORAGE_URL_ENV] = sqlalchemy_url(dagster_database_url(billing_url))
    # chdb is one process's engine: with it, runs must not overlap.
    max_runs = 1 if settings.env(settings.CLICKHOUSE_URL_ENV) is None else 4
    (home / "dagster.yaml").write_text(_DAGSTER_YAML.format(env=STORAGE_URL_ENV, max_runs=max_runs))
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_instance(billing_url: str) -> dg.DagsterInstance:
    prepare_instance(billing_url)
    return dg.DagsterInstance.get()
