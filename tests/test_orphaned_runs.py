"""A run whose process was killed does not block the run queue for good."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import dagster as dg

from billing_pipeline.instance import fail_orphaned_runs

KILLED_MID_RUN = textwrap.dedent("""
    import os, sys
    import dagster as dg

    @dg.asset
    def killed_mid_run():
        os._exit(9)  # as kill -9 would, with the run STARTED

    instance = dg.DagsterInstance.from_ref(dg._core.instance.InstanceRef.from_dir(sys.argv[1]))
    dg.materialize([killed_mid_run], instance=instance)
""")


def test_a_run_left_started_by_a_killed_process_is_marked_failed(tmp_path):
    # kill -9 of `billing close` left its run STARTED: with one run at a time (chdb) a backfill from the
    # UI stayed QUEUED behind it until someone terminated the run by hand
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_RUN, str(tmp_path)], capture_output=True)
    assert killed.returncode == 9
    with dg.DagsterInstance.from_ref(dg._core.instance.InstanceRef.from_dir(str(tmp_path))) as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED
        assert [run_id for run_id, _ in fail_orphaned_runs(instance)] == [run.run_id]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert fail_orphaned_runs(instance) == []  # once


def test_a_run_whose_process_lives_is_left_alone(tmp_path):
    with dg.DagsterInstance.from_ref(dg._core.instance.InstanceRef.from_dir(str(tmp_path))) as instance:
        @dg.asset
        def checks_while_running(context) -> None:
            assert fail_orphaned_runs(context.instance) == []  # this process runs it

        assert dg.materialize([checks_while_running], instance=instance).success
