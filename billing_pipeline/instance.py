"""The Dagster instance of this product: run/event/schedule storage in PostgreSQL.

``prepare_instance`` writes ``<state dir>/dagster/dagster.yaml`` and points DAGSTER_HOME at it. The
storage URL is read from an environment variable at load time, so no password is written to disk.
"""

from __future__ import annotations

import os
import sys
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
    instance = dg.DagsterInstance.get()
    if settings.env(settings.CLICKHOUSE_URL_ENV) is None:  # one machine (chdb): every run's process is here
        for run_id, pid in fail_orphaned_runs(instance):
            print(f"run {run_id} was left STARTED by a process that is gone ({pid}, killed?): marked failed, so the "
                  "run queue moves on", file=sys.stderr)
    return instance


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[tuple[str, int]]:
    """Mark failed the runs left STARTED by a process of this machine that no longer exists.

    `billing close` runs in-process, where Dagster's run monitoring cannot see; killed, its run
    stayed STARTED for good, and with chdb (one run at a time) every queued run waited behind it
    until someone terminated it by hand. Only for one machine's runs: a pid means nothing on another."""
    from dagster._core.events import DagsterEventType

    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        pids = {r.dagster_event.pid for r in instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START)
                if r.dagster_event is not None and r.dagster_event.pid}
        if pids and not any(_running(pid) for pid in pids):
            instance.report_run_failed(run, message=f"the process that ran it ({min(pids)}) ended without finishing "
                                                    "(killed?); marked failed by billing")
            failed.append((run.run_id, min(pids)))
    return failed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
