"""Failing asset checks sent to a webhook (BILLING_ALERT_WEBHOOK_URL), signed with
BILLING_ALERT_WEBHOOK_SECRET. The cursor is the event log position of the last check result
handled; an alert that cannot be delivered is retried on the next tick."""

import dagster as dg
from dagster._core.events import DagsterEventType

from .. import settings
from ..steps.alerts import post_alert


def _text(value) -> str:
    return str(getattr(value, "value", value))[:2000]


@dg.sensor(name="check_alerts", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Posts every failing asset check (red or yellow) to BILLING_ALERT_WEBHOOK_URL as signed JSON.")
def check_alerts(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    url = settings.env(settings.ALERT_WEBHOOK_URL_ENV)
    if not url:
        return dg.SkipReason(f"{settings.ALERT_WEBHOOK_URL_ENV} is not set: failing checks show in the UI only")
    records = context.instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION,
                              after_cursor=int(context.cursor) if context.cursor else None),
        limit=200, ascending=True)
    if context.cursor is None:  # first tick: start from now, do not replay history
        latest = context.instance.event_log_storage.get_event_records(
            dg.EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION), limit=1)
        context.update_cursor(str(latest[0].storage_id if latest else 0))
        return dg.SkipReason("alerting starts from the next failing check")
    sent = 0
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed:
            alert = {"event": "asset_check_failed", "asset": evaluation.asset_key.to_user_string(),
                     "check": evaluation.check_name, "partition": evaluation.partition,
                     "severity": evaluation.severity.value, "run_id": record.run_id,
                     "timestamp": record.timestamp, "description": evaluation.description,
                     "metadata": {k: _text(v) for k, v in evaluation.metadata.items()}}
            try:
                post_alert(url, settings.env(settings.ALERT_WEBHOOK_SECRET_ENV), alert)
            except Exception as exc:  # noqa: BLE001 (any delivery failure: retry next tick from here)
                return dg.SkipReason(f"{sent} alerts sent; delivery failed, retried next tick: {exc}")
            sent += 1
        context.update_cursor(str(record.storage_id))
    return dg.SkipReason(f"{sent} failing checks sent to the alert webhook ({len(records)} results read)")
