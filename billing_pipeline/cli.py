"""`billing`: the product's command line.

    billing demo      generate a month of demo usage, seed contracts, close the month, print invoices
    billing close     close a month from the usage already in ClickHouse
    billing invoices  print a month's invoice drafts
    billing issue     issue a closed month through the sinks (Stripe; a dry run without an API key)
    billing dispute   re-run disputed days of an issued month; credit notes / supplementary invoices
    billing fx rate   the TCMB rate an invoice issued on a date would use, as JSON
    billing evidence  signed proof of delivery (raw requests) for a contract and a date range
    billing stripe-webhook  serve the signed Stripe webhook endpoint (invoice events)
    billing ui        start the Dagster webserver and daemon on the same state, print the URL
    billing migrate   apply database migrations
    billing ledger verify  recompute the ledger's hash chain and balances
    billing audit verify   check a signed audit snapshot offline (signature, hashes, Merkle root)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date, datetime, timedelta, timezone

from . import settings
from .domain.periods import Period
from .errors import BillingError


def _last_complete_month() -> str:
    first_of_this_month = datetime.now(timezone.utc).date().replace(day=1)
    return (first_of_this_month - timedelta(days=1)).strftime("%Y-%m")


def _this_command() -> str:
    """How to call `billing` again: the venv's script, relative to here when it is below here."""
    script = os.path.join(os.path.dirname(sys.executable), "billing")
    if not os.path.exists(script):
        return "billing"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else script


def _step(label: str):
    start = time.perf_counter()
    print(f"-> {label} ...", flush=True)
    return lambda: print(f"   done in {time.perf_counter() - start:.1f}s", flush=True)


def _database() -> str:
    return _migrated_database()[0]


def _demo_database() -> str:
    """The demo's own database, migrated: on a server (BILLING_DATABASE_URL), made if missing, as
    the embedded one is; other commands refuse a missing database rather than close a month into
    an empty one."""
    if settings.env(settings.DATABASE_URL_ENV):
        from .stores.postgres import billing_database_url, database_name, ensure_database, with_database

        url = billing_database_url()
        ensure_database(with_database(url, "postgres"), database_name(url), settings.DATABASE_URL_ENV)
    return _database()


def _migrated_database() -> tuple[str, list[int]]:
    """The billing database's URL, its schema brought up to date first; and the migrations applied."""
    from .stores.postgres import billing_database_url, migrate, redact

    url = billing_database_url()
    applied = migrate(url)
    where = "embedded PostgreSQL" if not settings.env(settings.DATABASE_URL_ENV) else "BILLING_DATABASE_URL"
    print(f"   billing database: {redact(url)} ({where})")
    return url, applied


def _usage_store():
    from .stores.clickhouse import ensure_schema, open_usage_store

    store = open_usage_store(settings.env(settings.CLICKHOUSE_URL_ENV), settings.env(settings.CLICKHOUSE_USER_ENV),
                             settings.env(settings.CLICKHOUSE_PASSWORD_ENV))
    ensure_schema(store)
    print(f"   usage store: {store.engine}" + ("" if settings.env(settings.CLICKHOUSE_URL_ENV)
                                              else f" at {settings.chdb_path()}"))
    return store


def _rollup_config(allow_empty_days: bool) -> dict | None:
    return {"allow_empty_days": True} if allow_empty_days else None


def _close(db_url: str, period: Period, allow_empty_days: bool = False) -> None:
    from .close import close_month
    from .instance import get_instance

    done = _step(f"closing {period.label} in Dagster (usage_rollups: all {len(period.days())} days and the edge days "
                 "in one run; then fx_snapshot, rated_charges, invoice_drafts and the signed audit_snapshot)")
    with get_instance(db_url) as instance:
        result = close_month(instance, period, rollup_config=_rollup_config(allow_empty_days))
    print(f"   runs {result.rollup_run_id} and {result.billing_run_id}")
    for check in result.failed_checks:
        print(f"   ALARM: asset check {check} failed; its table is in the Dagster UI (billing ui)")
    done()


def _issue(db_url: str, period: Period) -> None:
    from .close import issue_month
    from .instance import get_instance
    from .stores.postgres import connect

    from .definitions import build_resources

    resources = build_resources()
    dry = "a dry run (sends nothing until its credentials are set)"
    modes = ", ".join(f"{name} {dry if resources[key].is_dry_run else 'live'}"
                      for name, key in (("Stripe", "stripe"), ("Parasut", "parasut")))
    done = _step(f"issuing {period.label} through stripe_invoices and parasut_invoices ({modes})")
    with get_instance(db_url) as instance:
        run_id = issue_month(instance, period)
    with connect(db_url) as conn:
        for sink, region in (("STRIPE", "GLOBAL"), ("PARASUT", "TR")):
            issued, stopped, recorded, invoices = conn.execute(
                """SELECT count(*) FILTER (WHERE i.sink = %(sink)s AND i.status IN ('ISSUED', 'PAID', 'VOID')),
                          count(*) FILTER (WHERE i.sink_error IS NOT NULL),
                          (SELECT count(*) FROM sink_outbox o JOIN invoices j USING (invoice_id)
                           WHERE j.period_start = %(start)s AND o.sink = %(sink)s AND o.status = 'DRY_RUN'),
                          count(*)
                   FROM invoices i JOIN contracts c USING (contract_id)
                   WHERE i.period_start = %(start)s AND c.region = %(region)s AND i.kind = 'INVOICE'""",
                {"sink": sink, "start": period.start, "region": region}).fetchone()
            name = sink.title()
            print(f"   {name}: {invoices} invoices, {issued} issued, {stopped} stopped (reason on the invoice)"
                  + (f"; dry run: {recorded} requests recorded in sink_outbox" if recorded else ""))
    print(f"   run {run_id}")
    done()


def _marts(db_url: str, period: Period) -> None:
    from .close import build_marts
    from .instance import get_instance
    from .stores.postgres import connect

    done = _step(f"building the analyst marts for {period.label} with dbt (revenue per chain and plan, top customers, "
                 "margin per chain, invoice status and ageing; dbt's tests run as asset checks)")
    # dagster-dbt echoes dbt's log to stdout (a run's compute log in the UI); here it stays in the run
    with get_instance(db_url) as instance, contextlib.redirect_stdout(io.StringIO()):
        run_ids = build_marts(instance, period)
    with connect(db_url) as conn:
        rows = conn.execute("""SELECT chain, currency, revenue FROM analytics_marts.revenue_per_chain
                               WHERE period_start = %s AND chain <> 'all chains'
                               ORDER BY revenue_usd DESC NULLS LAST LIMIT 3""",
                            (period.start,)).fetchall()
    print("   top chains by usage revenue: " + "; ".join(f"{c} {r:,.2f} {cur.strip()}" for c, cur, r in rows))
    print(f"   schema analytics_marts, readable by role billing_analyst; runs {' and '.join(run_ids)}")
    done()


def _require_closed(db_url: str, period: Period) -> None:
    """Refuse a month never closed here, instead of reporting zero invoices as if it had been."""
    from .stores.postgres import connect

    with connect(db_url) as conn:
        rated = conn.execute("""SELECT contracts, EXISTS (SELECT 1 FROM invoices WHERE period_start = r.period_start)
                                FROM rating_runs r WHERE period_start = %s""", (period.start,)).fetchone()
    if rated is None:
        raise BillingError(f"{period.label} has not been closed: rated_charges {period.start.isoformat()} was never "
                           f"materialized, so there are no invoices; close it first: billing close --month {period.label}")
    if rated[0] and not rated[1]:  # a close that stopped after rating: the sinks would issue nothing, and say so
        raise BillingError(f"{period.label} has not been closed: rated_charges {period.start.isoformat()} rated "
                           f"{rated[0]:,} contract(s) but invoice_drafts has drafted none; close it again: "
                           f"billing close --month {period.label}")


def cmd_issue(args: argparse.Namespace) -> None:
    db_url, period = _database(), Period.parse_month(args.month)
    _require_closed(db_url, period)
    _issue(db_url, period)


def cmd_dispute(args: argparse.Namespace) -> int:
    from .close import check_dispute_days, dispute_month
    from .instance import get_instance
    from .steps.corrections import dispute_report, month_corrections

    period = Period.parse_month(args.month)
    days = [date.fromisoformat(d) for d in args.day]
    check_dispute_days(period, days)  # before anything starts
    db_url = _database()
    _require_closed(db_url, period)  # a month never closed has no invoice to dispute
    done = _step(f"dispute backfill of {period.label}: usage_rollups for {', '.join(args.day)}, then rated_charges, "
                 "invoice_drafts, the sinks, invoice_corrections and audit_snapshot")
    before = {d[0]: d[7] for d in month_corrections(db_url, period)}
    with get_instance(db_url) as instance:
        run_ids = dispute_month(instance, period, days, rollup_config=_rollup_config(args.allow_empty_days))
    lines, stopped = dispute_report(db_url, period, before)
    for line in lines:
        print(f"   {line}")
    print(f"   runs {', '.join(run_ids)}")
    done()
    return 1 if stopped else 0


def cmd_stripe_webhook(args: argparse.Namespace) -> None:
    import http.server

    from .errors import ConfigError
    from .sinks.stripe.webhook import handler_for

    secret = settings.env(settings.STRIPE_WEBHOOK_SECRET_ENV)
    if not secret:
        raise ConfigError(f"{settings.STRIPE_WEBHOOK_SECRET_ENV} is not set: the endpoint's signing secret (whsec_...) "
                          "from the Stripe Dashboard is needed to verify deliveries")
    _check_port_free(args.host, args.port)
    server = http.server.ThreadingHTTPServer((args.host, args.port), handler_for(_database(), secret))
    print(f"Stripe webhook endpoint on http://{args.host}:{args.port}/ (invoice.finalized, invoice.paid, "
          "invoice.payment_failed, invoice.voided); Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def cmd_fx_rate(args: argparse.Namespace) -> None:
    import json
    from datetime import date

    from .steps.fx import DEFAULT_ECB_BASE, DEFAULT_TCMB_BASE, FxSources, last_known_from, resolve
    from .stores.postgres import connect

    currency = args.currency.upper()
    issue_date = date.fromisoformat(args.date)
    sources = FxSources(settings.env(settings.TCMB_BASE_URL_ENV) or DEFAULT_TCMB_BASE,
                        settings.env(settings.ECB_BASE_URL_ENV) or DEFAULT_ECB_BASE)
    limit = settings.decimal_env(settings.FX_MAX_DIVERGENCE_ENV, "0.02")
    try:
        if settings.env(settings.DATABASE_URL_ENV):  # the last known rate, if no source answers
            with connect(settings.env(settings.DATABASE_URL_ENV)) as conn:
                result = resolve(sources, {currency}, issue_date, limit, last_known_from(conn))
        else:
            result = resolve(sources, {currency}, issue_date, limit)
    finally:
        sources.close()
    outcome = result.outcomes[0]
    if outcome.snapshot is None:
        raise BillingError(f"no {currency} rate for an invoice issued on {issue_date}: {outcome.failure}")
    s = outcome.snapshot
    print(json.dumps({
        "currency": currency, "quote_currency": "TRY", "issue_date": issue_date.isoformat(), "rate": str(s.rate),
        "kind": "ForexBuying", "bulletin_date": s.bulletin_date.isoformat(), "source": s.source,
        "estimated": s.estimated, "raw_sha256": s.raw_sha256,
        "ecb_cross_rate": None if s.cross_check.ecb_rate is None else str(s.cross_check.ecb_rate),
        "divergence": None if s.cross_check.divergence is None else str(s.cross_check.divergence),
        "divergence_flagged": s.cross_check.flagged}, indent=2))


def cmd_evidence(args: argparse.Namespace) -> None:
    from .definitions import defs
    from .instance import get_instance

    db_url = _database()
    _usage_store()
    config = {"contract_id": args.contract, "from_date": args.from_date, "to_date": args.to_date}
    with get_instance(db_url) as instance:
        result = defs.resolve_job_def("export_evidence_job").execute_in_process(
            instance=instance, run_config={"ops": {"export_contract_evidence": {"config": config}},
                                           "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            raise_on_error=False)
    if not result.success:
        from .close import _raise_if_failed
        _raise_if_failed(result, f"export_evidence {args.contract}")
    observation = next(e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION")
    meta = observation.event_specific_data.asset_observation.metadata
    unbilled = meta["unbilled_rows"].value
    print(f"{meta['requests'].value} requests billed to {args.contract} from {args.from_date} to {args.to_date} "
          f"(exclusive)" + (f", and {unbilled} rows served but not billed (quarantined)" if unbilled else "")
          + f", signed: {meta['location'].value}  (run {result.run_id})")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo.seed import seed_demo_contracts
    from .demo.synthetic import UsageSpec, chain_names, generate_usage
    from .resources.audit_storage import published_public_key
    from .stores.postgres import transaction
    from .summary import format_month_summary

    from .close import check_closable, rollup_days

    period = Period.parse_month(args.month)
    check_closable(period)
    print(f"Billing pipeline demo: month {period.label}, state in {settings.state_dir()}")
    done = _step("starting stores")
    db_url = _demo_database()
    store = _usage_store()
    done()
    done = _step(f"generating {args.events:,} requests for {args.orgs} orgs / {args.projects} projects / "
                 f"{args.chains} chains over {len(period.days())} days + a day on each side (seed {args.seed})")
    # the month and a day on each side: customers in other timezones reach into them
    days = rollup_days(period)
    spec = UsageSpec(start=days[0], days=len(days), events=args.events, orgs=args.orgs,
                     projects=args.projects, chains=chain_names(args.chains), seed=args.seed)
    rows = generate_usage(store, spec)
    print(f"   {rows:,} rows in requests_raw (duplicates included)")
    done()
    done = _step("seeding plans, customers and contracts")
    with transaction(db_url) as conn:
        n = seed_demo_contracts(conn, args.orgs, period)
    print(f"   {n} contracts")
    done()
    _close(db_url, period)
    _issue(db_url, period)
    _marts(db_url, period)
    print()
    print(format_month_summary(db_url, period))
    print()
    prefix = "" if os.environ.get(settings.STATE_DIR_ENV) is None else f"{settings.STATE_DIR_ENV}={settings.state_dir()} "
    snapshot = settings.state_dir() / "audit" / "snapshots" / period.label
    if snapshot.is_dir():
        print("Signed audit snapshot (Ed25519, Merkle root over the invoice lines), verify it offline:")
        print(f"    {prefix}{_this_command()} audit verify {snapshot} --public-key {published_public_key()} --ledger")
        print()
    print("See the same data in the Dagster UI (asset graph, runs, metadata):")
    print(f"    {prefix}{_this_command()} ui        # then open http://127.0.0.1:3000")


_EMPTY_DAYS_HELP = ("days with no usage at all really had no traffic (without it such a day stops the rollup as an "
                    "ingestion gap)")


def cmd_close(args: argparse.Namespace) -> None:
    from .summary import format_month_summary

    period = Period.parse_month(args.month)
    db_url = _database()
    _usage_store()
    _close(db_url, period, args.allow_empty_days)
    print(format_month_summary(db_url, period))


def cmd_invoices(args: argparse.Namespace) -> None:
    from .summary import format_month_summary

    db_url, period = _database(), Period.parse_month(args.month)
    _require_closed(db_url, period)
    print(format_month_summary(db_url, period))


def cmd_migrate(args: argparse.Namespace) -> None:
    applied = _migrated_database()[1]
    print(f"applied migrations: {applied or 'none (up to date)'}")


def _workspace_file() -> str:
    path = settings.state_dir() / "dagster" / "workspace.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("load_from:\n  - python_module:\n      module_name: billing_pipeline.definitions\n"
                    "      location_name: billing_pipeline\n")
    return str(path)


def _wait_for_http(url: str, timeout: float, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another server holds, before starting ours: the webserver would fail to bind
    and exit, while the other server (another Dagster UI, say) answered in its place."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise BillingError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server holds it?); "
                           "stop it or pass --port") from None


def cmd_ui(args: argparse.Namespace) -> None:
    from .instance import prepare_instance

    _check_port_free(args.host, args.port)
    db_url = _database()
    home = prepare_instance(db_url)
    # Children get the resolved URL, so they reuse this process's embedded server, never start one.
    os.environ[settings.DATABASE_URL_ENV] = db_url
    os.environ[settings.STATE_DIR_ENV] = str(settings.state_dir())
    workspace = _workspace_file()
    bin_dir = os.path.dirname(sys.executable)
    daemon = subprocess.Popen([os.path.join(bin_dir, "dagster-daemon"), "run", "-w", workspace])
    web = subprocess.Popen([os.path.join(bin_dir, "dagster-webserver"), "-w", workspace,
                            "-h", args.host, "-p", str(args.port)])
    url = f"http://{args.host}:{args.port}"
    try:
        if not _wait_for_http(f"{url}/server_info", 120, web):
            raise BillingError(f"the Dagster webserver did not come up on {url}; see its output above")
        print(f"\nDagster UI: {url}   (DAGSTER_HOME={home}; daemon running; Ctrl-C stops both)\n", flush=True)
        while web.poll() is None and daemon.poll() is None:
            time.sleep(1)
        stopped, code = ("webserver", web.returncode) if web.poll() is not None else ("daemon", daemon.returncode)
        raise BillingError(f"the Dagster {stopped} stopped (exit code {code}); see its output above")
    except KeyboardInterrupt:
        pass
    finally:
        for p in (web, daemon):
            if p.poll() is None:
                p.terminate()
        for p in (web, daemon):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    from .stores.ledger import documents_against_ledger, verify
    from .stores.postgres import connect

    with connect(_database()) as conn:
        result = verify(conn)
        documents = documents_against_ledger(conn)
    if result.ok:
        print(f"ledger OK: {result.entries:,} entries in {result.transactions:,} transactions, head {result.head}")
    else:
        print(f"ledger BROKEN: {result.first_error}")
    for problem in documents.problems:
        print(f"ledger DIFFERS: {problem}")
    if not documents.problems:
        print(f"issued documents OK: {documents.documents:,} agree with the ledger's record of their issue")
    return 0 if result.ok and not documents.problems else 1


def _load_snapshot(target: str, directory) -> tuple[dict, dict[str, str], str | None]:
    """The snapshot's objects as files: a local folder's own, or an S3 prefix's streamed into ``directory``."""
    from pathlib import Path

    if target.startswith("s3://"):
        from .stores.audit_bucket import AuditBucket

        bucket, _, prefix = target[5:].partition("/")
        store = AuditBucket(bucket, settings.env(settings.AUDIT_S3_ENDPOINT_ENV),
                            access_key=settings.env(settings.AUDIT_S3_ACCESS_KEY_ENV),
                            secret_key=settings.env(settings.AUDIT_S3_SECRET_KEY_ENV))
        objects, versions = store.download(prefix.rstrip("/"), directory)
        return objects, versions, prefix.rstrip("/")
    folder = Path(target)
    if not folder.is_dir():
        raise BillingError(f"{target}: not a directory or an s3://bucket/prefix")
    return {p.name: p for p in folder.iterdir() if p.is_file()}, {}, None


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="audit-verify-") as directory:
        return _audit_verify(args, *_load_snapshot(args.target, Path(directory))[:2])


def _audit_verify(args: argparse.Namespace, objects: dict, versions: dict[str, str]) -> int:
    from pathlib import Path

    from .domain.audit import MANIFEST, PUBLIC_KEY, prove_line, sha256_hex, verify_snapshot

    if not objects:
        raise BillingError(f"{args.target}: no snapshot objects found")
    public_key = Path(args.public_key).read_bytes()
    check = verify_snapshot(objects, public_key)
    problems = list(check.problems)
    snapshot = check.manifest is not None and check.manifest.get("kind") != "evidence"
    expected = args.month or _month_named_by(args.target)
    if snapshot and expected and check.manifest.get("month") != expected:
        problems.append(f"manifest.json: this is the snapshot of {check.manifest.get('month')}, not of {expected}")
    if args.ledger and check.manifest and (snapshot or versions):
        problems += _ledger_problems(check.manifest["month"], sha256_hex(objects[MANIFEST]) if snapshot else None,
                                     versions)
    if snapshot and not args.ledger and isinstance(objects.get(PUBLIC_KEY), Path) \
            and Path(args.public_key).resolve() == objects[PUBLIC_KEY].resolve():
        # anyone who rewrites a snapshot can sign it again and put their own key beside it
        print("note: --public-key is the snapshot's own public_key.pem: this proves the files are the ones its "
              "manifest lists and signs, not who signed it; give the key the billing team publishes, or --ledger")
    for problem in problems:
        print(f"FAIL {problem}")
    if not problems and check.manifest.get("kind") == "evidence":
        m = check.manifest
        unbilled = f" (and {m['unbilled_rows']:,} rows not billed)" if m.get("unbilled_rows") else ""
        print(f"evidence OK: {m['contract_id']} ({m['org_id']}) {m['from']} .. {m['to']}, {m['requests']:,} requests"
              f"{unbilled}, {len(m['files'])} files, signature valid")
    elif not problems:
        m = check.manifest
        print(f"snapshot OK: {m['month']}, {len(m['files'])} files, {m['invoice_lines']:,} invoice lines, "
              f"merkle root {m['merkle_root']}, signature valid")
    if args.prove_line and check.manifest:
        line, path, ok = prove_line(objects, args.prove_line)
        print(f"line: {line.decode()}")
        for side, sibling in path:
            print(f"  {side} {sibling}")
        print(f"proof {'leads to' if ok else 'does NOT lead to'} merkle root {check.manifest['merkle_root']}")
        problems += [] if ok else ["Merkle proof failed"]
    return 1 if problems else 0


def _month_named_by(target: str) -> str | None:
    """The month a snapshot's folder or prefix is named after (snapshots/2026-10), if it is."""
    import re

    name = target.rstrip("/").rsplit("/", 1)[-1]
    return name if re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", name) else None


def _ledger_problems(month: str, manifest_sha256: str | None, versions: dict[str, str]) -> list[str]:
    """From the month's AUDIT_SNAPSHOT entries, read once: the manifest must be the month's latest
    snapshot the ledger recorded (hash-chained, so a snapshot rewritten and signed again with
    another key is not one of them), and each object's current version the one it recorded."""
    from .stores.postgres import connect

    with connect(_database()) as conn:
        rows = conn.execute("""SELECT entity_id, account FROM ledger WHERE event = 'AUDIT_SNAPSHOT'
                               AND entity_id LIKE %s ORDER BY entry_id""", (f"{month}:%",)).fetchall()
    manifests = list(dict.fromkeys(entity_id.partition(":")[2] for entity_id, _ in rows))  # oldest first
    recorded = {}  # object -> the version the latest snapshot recorded
    for _, account in rows:
        if account.startswith("audit:") and "@" in account:
            name, _, version = account[len("audit:"):].rpartition("@")
            recorded[name] = version
    problems = [f"{name}: current version {versions[name]} is not the version {recorded.get(name)} the ledger "
                "recorded" for name in sorted(versions) if recorded.get(name) != versions[name]]
    if manifest_sha256 is None or manifest_sha256 == (manifests or [None])[-1]:
        return problems
    if not manifests:
        return [f"manifest.json: the ledger records no snapshot of {month}", *problems]
    latest = manifests[-1][:16]
    if manifest_sha256 in manifests:
        return [f"manifest.json: an earlier snapshot of {month}; the ledger's latest is {latest}...", *problems]
    return [f"manifest.json: SHA-256 {manifest_sha256[:16]}... is not a snapshot of {month} the ledger recorded "
            f"(its latest is {latest}...)", *problems]


def _month_argument(text: str) -> str:
    """An argparse type: YYYY-MM, refused by argparse with its flag."""
    if _month_named_by(text) != text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month (YYYY-MM)")
    return text


def _at_least(minimum: int):
    """An argparse type: a whole number of at least ``minimum``, refused by argparse with its flag."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value
    parse.__name__ = "count"
    return parse


def _day(text: str) -> str:
    """An argparse type: a calendar date, YYYY-MM-DD (kept as text, as the commands pass it on)."""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="billing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate demo usage and close one month on embedded defaults")
    demo.add_argument("--month", default=_last_complete_month(), help="YYYY-MM (default: last complete month)")
    demo.add_argument("--events", type=_at_least(1), default=2_000_000, help="distinct requests to generate")
    demo.add_argument("--orgs", type=_at_least(1), default=40)
    demo.add_argument("--projects", type=_at_least(1), default=120)
    demo.add_argument("--chains", type=_at_least(1), default=8)
    demo.add_argument("--seed", type=int, default=42)
    demo.set_defaults(func=cmd_demo)
    close = sub.add_parser("close", help="close a month from the usage already in ClickHouse")
    close.add_argument("--month", default=_last_complete_month())
    close.add_argument("--allow-empty-days", action="store_true", help=_EMPTY_DAYS_HELP)
    close.set_defaults(func=cmd_close)
    inv = sub.add_parser("invoices", help="print a month's invoice drafts")
    inv.add_argument("--month", default=_last_complete_month())
    inv.set_defaults(func=cmd_invoices)
    issue = sub.add_parser("issue", help="issue a closed month through the sinks (dry run without a Stripe key)")
    issue.add_argument("--month", default=_last_complete_month())
    issue.set_defaults(func=cmd_issue)
    dispute = sub.add_parser("dispute", help="re-run disputed days of an issued month and issue credit notes or "
                                             "supplementary invoices for what changed")
    dispute.add_argument("--month", required=True)
    dispute.add_argument("--day", action="append", required=True, type=_day, help="a disputed day, YYYY-MM-DD (repeatable)")
    dispute.add_argument("--allow-empty-days", action="store_true", help=_EMPTY_DAYS_HELP)
    dispute.set_defaults(func=cmd_dispute)

    fx = sub.add_parser("fx", help="exchange rates").add_subparsers(dest="fx_command", required=True)
    rate = fx.add_parser("rate", help="the TCMB rate an invoice issued on a date would use (JSON)")
    rate.add_argument("--currency", required=True, help="ISO code, e.g. USD")
    rate.add_argument("--date", required=True, type=_day, help="the invoice's issue date, YYYY-MM-DD")
    rate.set_defaults(func=cmd_fx_rate)

    evidence = sub.add_parser("evidence", help="signed proof of delivery for a contract and a date range")
    evidence.add_argument("--contract", required=True)
    evidence.add_argument("--from", dest="from_date", required=True, type=_day,
                          help="YYYY-MM-DD, included (a day of the contract's timezone, as its invoices bill)")
    evidence.add_argument("--to", dest="to_date", required=True, type=_day, help="YYYY-MM-DD, not included")
    evidence.set_defaults(func=cmd_evidence)

    hook = sub.add_parser("stripe-webhook", help="serve the Stripe webhook endpoint (needs "
                                                 "BILLING_STRIPE_WEBHOOK_SECRET)")
    hook.add_argument("--host", default="127.0.0.1")
    hook.add_argument("--port", type=_at_least(1), default=8787)
    hook.set_defaults(func=cmd_stripe_webhook)

    ui = sub.add_parser("ui", help="start the Dagster webserver and daemon on the product's state")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=_at_least(1), default=3000)
    ui.set_defaults(func=cmd_ui)
    mig = sub.add_parser("migrate", help="apply database migrations")
    mig.set_defaults(func=cmd_migrate)
    ledger = sub.add_parser("ledger", help="the audit ledger").add_subparsers(dest="ledger_command", required=True)
    ledger.add_parser("verify", help="recompute the hash chain and every balance; exit 1 on any break"
                      ).set_defaults(func=cmd_ledger_verify)
    audit = sub.add_parser("audit", help="signed audit snapshots").add_subparsers(dest="audit_command", required=True)
    verify = audit.add_parser("verify", help="check a snapshot's signature, file hashes and Merkle root offline")
    verify.add_argument("target", help="s3://bucket/prefix (endpoint from BILLING_AUDIT_S3_ENDPOINT) or a directory")
    verify.add_argument("--public-key", required=True, help="PEM file of the Ed25519 public key")
    verify.add_argument("--prove-line", metavar="INVOICE_ID#LINE_NO", help="print and check one line's Merkle path")
    verify.add_argument("--month", type=_month_argument,
                        help="the month the snapshot must be of (by default the month its folder or prefix names)")
    verify.add_argument("--ledger", action="store_true",
                        help="also check the manifest is the month's latest the ledger recorded, and each object's "
                             "S3 version (needs the billing database)")
    verify.set_defaults(func=cmd_audit_verify)
    return parser


def _quiet_warnings() -> None:
    # Library notices (Dagster beta flags, platformdirs' runtime dir) are not for the operator.
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def main(argv: list[str] | None = None) -> int:
    _quiet_warnings()
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except BillingError as exc:
        print(f"billing: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad --month and similar argument errors
        print(f"billing: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside a Dagster run (inside one, the run reports it, above)
        print("billing: interrupted; every step is safe to run again: run the same command again", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
