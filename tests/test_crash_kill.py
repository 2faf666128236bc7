"""kill -9 during the month close and inside the sinks, then a re-run: nothing lost, nothing twice.

The month is the dispute scenario's October (four Stripe invoices, two Parasut invoices). A child
process runs the close or the sinks exactly as the CLI does, and is killed with SIGKILL:
- at each step boundary of the close, the moment the step's rows are committed (the parent watches
  PostgreSQL and kills as soon as they appear);
- inside the sinks, after every external call: each attempt is killed as soon as Stripe or Parasut
  has carried out a call no earlier attempt made, before it reads the answer; attempts go on until
  one completes without a new call (tests/kill_proxy.py).
Then the close and the sinks are re-run to the end, and Stripe and Parasut must hold exactly one
invoice per contract-month, PostgreSQL every draft and issued invoice, and the ledger must be
balanced and chained.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from billing_pipeline.stores.audit_bucket import AuditBucket
from billing_pipeline.stores.clickhouse import release_chdb_sessions
from billing_pipeline.stores.ledger import verify
from kill_proxy import KillProxy, KillSwitch
from parasut_server import ParasutServer
from stripe_server import StripeServer
from test_dispute_scenario import scenario  # noqa: F401  (the fixture)



class Zygote:
    """tests/crash_driver.py as a process that forks a child per command."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("crash_driver.py"))],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self, cfg: dict, what: str) -> int:
        self.process.stdin.write(json.dumps({"cfg": cfg, "what": what}) + "\n")
        self.process.stdin.flush()
        return int(self._answer("pid"))

    def wait(self) -> int:
        return int(self._answer("exit"))

    def _answer(self, kind: str) -> str:
        line = self.process.stdout.readline()
        assert line.startswith(kind + " "), f"zygote said {line!r}"
        return line.split()[1]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()

# Each step's commit, as seen from outside: kill the close as soon as it is true.
STEP_COMMITTED = {
    "usage_rollups": "SELECT count(*) = 33 FROM usage_rollup_days",
    "rated_charges": "SELECT count(*) > 0 FROM rated_charges",
    "invoice_drafts": "SELECT count(*) = 6 FROM invoices",
    "audit_snapshot": "SELECT count(*) > 0 FROM ledger WHERE event = 'AUDIT_SNAPSHOT'",
}
INVOICES = ["CTR-A:2026-10:v1", "CTR-B:2026-10:v1", "CTR-C:2026-10:v1", "CTR-D:2026-10:v1", "CTR-P:2026-10:v1",
            "CTR-V:2026-10:v1"]


def finish(zygote: Zygote, cfg: dict, what: str) -> None:
    zygote.start(cfg, what)
    assert zygote.wait() == 0, f"{what} failed in the re-run"


@pytest.fixture
def world(scenario, chdb_path, s3_endpoint, signing_key, zygote):  # noqa: F811
    AuditBucket("billing-audit", s3_endpoint).create()
    release_chdb_sessions()  # the children open the usage store
    switch = KillSwitch()
    with StripeServer() as stripe, ParasutServer(rate_limit=None, job_seconds_until_done=0.02) as parasut, \
            KillProxy(stripe.url, switch) as stripe_proxy, KillProxy(parasut.url, switch) as parasut_proxy:
        env = {k: v for k, v in os.environ.items() if k.startswith(("BILLING_", "AWS_"))}
        cfg = {"db_url": scenario, "chdb_path": str(chdb_path), "s3_endpoint": s3_endpoint, "env": env,
               "stripe_url": stripe_proxy.url, "parasut_url": parasut_proxy.url}
        yield zygote, cfg, switch, stripe.stripe, parasut.parasut


def assert_issued_exactly_once(db_url: str, stripe, parasut) -> None:
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT invoice_id, status FROM invoices ORDER BY 1").fetchall() == [
            (i, "ISSUED") for i in INVOICES]
        ledger = verify(conn)
        issued_events = conn.execute("SELECT entity_id, count(DISTINCT tx_id) FROM ledger WHERE event = 'INVOICE_ISSUED'"
                                     " GROUP BY 1 ORDER BY 1").fetchall()
    assert (ledger.ok, ledger.first_error) == (True, None)
    assert issued_events == [(i, 1) for i in INVOICES]
    stripe_ids = ["CTR-A:2026-10:v1", "CTR-C:2026-10:v1", "CTR-D:2026-10:v1", "CTR-V:2026-10:v1"]
    assert {i: [inv["status"] for inv in stripe.invoices_for(i)] for i in stripe_ids} == {i: ["open"] for i in stripe_ids}
    assert len(stripe.state.invoices) == 4
    refs = sorted(inv["attributes"]["description"].split("Ref: ")[1].split(" |")[0] for inv in parasut.state.sales_invoices.values())
    assert refs == ["CTR-B:2026-10:v1", "CTR-P:2026-10:v1"]
    assert sorted((d["kind"], d["sales_invoice_id"]) for d in parasut.state.documents.values()) == sorted(
        (d["kind"], d["sales_invoice_id"]) for d in parasut.state.documents.values() if d["sales_invoice_id"])
    assert len({d["sales_invoice_id"] for d in parasut.state.documents.values()}) == len(parasut.state.documents) == 2


@pytest.mark.parametrize("step", list(STEP_COMMITTED))
def test_kill_at_a_step_boundary_then_rerun(world, step):
    zygote, cfg, _switch, stripe, parasut = world
    pid = zygote.start(cfg, "close")
    with psycopg.connect(cfg["db_url"], autocommit=True) as conn:
        while not conn.execute(STEP_COMMITTED[step]).fetchone()[0]:
            time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    assert zygote.wait() == -9, f"the close ended before {step} committed"

    finish(zygote, cfg, "close")
    finish(zygote, cfg, "issue")
    assert_issued_exactly_once(cfg["db_url"], stripe, parasut)


def test_kill_after_every_external_call_of_the_sinks(world):
    zygote, cfg, switch, stripe, parasut = world
    finish(zygote, cfg, "close")
    for attempt in range(1, 200):
        switch.arm(zygote.start(cfg, "sinks"))
        exit_code = zygote.wait()
        if exit_code == 0:
            break
        assert exit_code == -9, f"attempt {attempt} failed on its own (exit code {exit_code})"
    switch.disarm()
    assert len(switch.killed_at) == attempt - 1
    print(f"{attempt - 1} kills, one after each call of: {switch.killed_at}")
    assert_issued_exactly_once(cfg["db_url"], stripe, parasut)
