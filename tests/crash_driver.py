"""What a killed process runs: the month close or the sinks, in a child process.

Children are forked from a zygote process that has imported Dagster and the product but opened no
store and started no thread, so each starts in milliseconds and can be killed with SIGKILL at any
moment. The zygote reads one JSON command per line on stdin and answers "pid N", then "exit CODE"
(-9 for a child killed with SIGKILL). Everything a child needs travels in the command.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import dagster as dg
import psycopg

from billing_pipeline.close import close_month, issue_month
from billing_pipeline.domain.periods import Period
from billing_pipeline.resources import StripeResource
from billing_pipeline.resources.audit_storage import AuditStorageResource
from billing_pipeline.resources.parasut import ParasutResource
from billing_pipeline.sinks.parasut import issuing as parasut_issuing
from billing_pipeline.sinks.stripe import issuing as stripe_issuing
from product_defs import product_defs

OCTOBER = Period.parse_month("2026-10")


def definitions(cfg: dict) -> dg.Definitions:
    return product_defs(
        cfg["db_url"], cfg["chdb_path"],
        audit_storage=AuditStorageResource(endpoint_url=cfg["s3_endpoint"], bucket="billing-audit"),
        stripe=StripeResource(api_key="sk_test_local", api_base=cfg["stripe_url"], max_ops_per_second=500),
        parasut=ParasutResource(base_url=cfg["parasut_url"], company_id="1234", client_id="cid",
                                client_secret="csecret", username="api@example.test", password="pw",
                                requests_per_window=1000, window_seconds=1.0, poll_interval_seconds=0.01))


def issue_directly(cfg: dict) -> None:
    """The two sinks' own code, as their assets call it, without a Dagster run around it."""
    resources = definitions(cfg).resources
    stripe, parasut, storage = resources["stripe"], resources["parasut"], resources["audit_storage"]
    stripe_issuing.issue_month(cfg["db_url"], stripe.gateway(), OCTOBER, concurrency=stripe.concurrency)
    client = parasut.client(cfg["db_url"])
    try:
        with storage.open_bucket() as bucket:
            parasut_issuing.issue_month(cfg["db_url"], client, OCTOBER, storage=bucket, workers=parasut.workers,
                                        polls=parasut_issuing.PollPolicy(interval=parasut.poll_interval_seconds))
    finally:
        client.close()
    with psycopg.connect(cfg["db_url"]) as conn:
        left = conn.execute("SELECT invoice_id, status, sink_error FROM invoices WHERE status <> 'ISSUED' "
                            "ORDER BY 1").fetchall()
    if left:  # the assets turn these into a failed check; here the attempt fails
        raise RuntimeError(f"not issued: {left}")


def run(cfg: dict, what: str) -> None:
    os.environ.update(cfg["env"])  # the forkserver started with another test's environment
    if what == "sinks":
        return issue_directly(cfg)
    with dg.DagsterInstance.ephemeral() as instance:
        if what == "close":
            close_month(instance, OCTOBER, definitions=definitions(cfg))
        else:
            issue_month(instance, OCTOBER, definitions=definitions(cfg))


def zygote() -> None:
    for line in sys.stdin:
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.dup2(2, 1)  # the child's prints must not mix with the answers on stdout
            code = 0
            try:
                run(command["cfg"], command["what"])
            except BaseException:  # noqa: BLE001 - reported as the child's exit code
                traceback.print_exc()
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    zygote()
