"""Where the product keeps its state and how it finds its stores.

Every setting is an environment variable, so the same code runs on a laptop (embedded defaults),
in CI and in production (real servers):

- BILLING_STATE_DIR          state directory (default ./.billing): embedded PostgreSQL data,
                             chdb data, dagster.yaml and Dagster's local artefacts.
- BILLING_DATABASE_URL       PostgreSQL for billing data; unset -> embedded PostgreSQL.
- BILLING_DAGSTER_DATABASE_URL  PostgreSQL for Dagster's run/event storage; unset -> a database
                             named <billing db>_dagster on the same server.
- BILLING_CLICKHOUSE_URL     ClickHouse server (http[s]://host:port[/database]); unset -> chdb.
- BILLING_CLICKHOUSE_USER, BILLING_CLICKHOUSE_PASSWORD  credentials for that server.
- BILLING_AUDIT_S3_ENDPOINT, _BUCKET, _ACCESS_KEY, _SECRET_KEY  S3-compatible storage (Object
                             Lock) for signed audit snapshots; unset -> an ephemeral moto server.
- BILLING_AUDIT_SIGNING_KEY or BILLING_AUDIT_SIGNING_KEY_FILE  the Ed25519 key (PEM) that signs them.
- BILLING_AUDIT_RETENTION_YEARS  Object Lock retention of snapshots (default 10 years).
- BILLING_OPENMETER_URL, BILLING_OPENMETER_TOKEN  read daily usage from OpenMeter's meter query API
                             instead of ClickHouse (optional).
- BILLING_STRIPE_API_KEY     Stripe secret key; unset -> the Stripe sink is a dry run (outbox only).
- BILLING_STRIPE_API_BASE    another Stripe-compatible API address (tests, stripe-mock).
- BILLING_STRIPE_DRY_RUN     "1" records requests without sending even with a key.
- BILLING_STRIPE_MAX_OPS_PER_SECOND  client-side rate limit (default 25 test mode, 100 live).
- BILLING_STRIPE_CONCURRENCY orgs issued in parallel (default 16).
- BILLING_STRIPE_WEBHOOK_SECRET  signing secret of the webhook endpoint (`billing stripe-webhook`).
- BILLING_TCMB_BASE_URL, BILLING_ECB_BASE_URL  where FX bulletins are fetched (default: the public sites).
- BILLING_FX_MAX_DIVERGENCE  TCMB vs ECB share beyond which a rate is flagged (default 0.02).
- BILLING_PARASUT_BASE_URL (default https://api.parasut.com), BILLING_PARASUT_COMPANY_ID,
  BILLING_PARASUT_CLIENT_ID, _CLIENT_SECRET, _USERNAME, _PASSWORD  Parasut API v4; any unset ->
  the Parasut sink is a dry run. BILLING_PARASUT_DRY_RUN=1 forces one.
- BILLING_ALERT_WEBHOOK_URL, BILLING_ALERT_WEBHOOK_SECRET  failing checks posted there as JSON,
  HMAC-SHA256 signed (header X-Billing-Signature).
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

STATE_DIR_ENV = "BILLING_STATE_DIR"
DATABASE_URL_ENV = "BILLING_DATABASE_URL"
DAGSTER_DATABASE_URL_ENV = "BILLING_DAGSTER_DATABASE_URL"
CLICKHOUSE_URL_ENV = "BILLING_CLICKHOUSE_URL"
CLICKHOUSE_USER_ENV = "BILLING_CLICKHOUSE_USER"
CLICKHOUSE_PASSWORD_ENV = "BILLING_CLICKHOUSE_PASSWORD"
OPENMETER_URL_ENV = "BILLING_OPENMETER_URL"
OPENMETER_TOKEN_ENV = "BILLING_OPENMETER_TOKEN"
AUDIT_S3_ENDPOINT_ENV = "BILLING_AUDIT_S3_ENDPOINT"
AUDIT_S3_BUCKET_ENV = "BILLING_AUDIT_S3_BUCKET"
AUDIT_S3_ACCESS_KEY_ENV = "BILLING_AUDIT_S3_ACCESS_KEY"
AUDIT_S3_SECRET_KEY_ENV = "BILLING_AUDIT_S3_SECRET_KEY"
AUDIT_RETENTION_YEARS_ENV = "BILLING_AUDIT_RETENTION_YEARS"
STRIPE_API_KEY_ENV = "BILLING_STRIPE_API_KEY"
STRIPE_API_BASE_ENV = "BILLING_STRIPE_API_BASE"
STRIPE_DRY_RUN_ENV = "BILLING_STRIPE_DRY_RUN"
STRIPE_MAX_OPS_ENV = "BILLING_STRIPE_MAX_OPS_PER_SECOND"
STRIPE_CONCURRENCY_ENV = "BILLING_STRIPE_CONCURRENCY"
STRIPE_WEBHOOK_SECRET_ENV = "BILLING_STRIPE_WEBHOOK_SECRET"
TCMB_BASE_URL_ENV = "BILLING_TCMB_BASE_URL"
ECB_BASE_URL_ENV = "BILLING_ECB_BASE_URL"
FX_MAX_DIVERGENCE_ENV = "BILLING_FX_MAX_DIVERGENCE"
PARASUT_BASE_URL_ENV = "BILLING_PARASUT_BASE_URL"
PARASUT_COMPANY_ID_ENV = "BILLING_PARASUT_COMPANY_ID"
PARASUT_CLIENT_ID_ENV = "BILLING_PARASUT_CLIENT_ID"
PARASUT_CLIENT_SECRET_ENV = "BILLING_PARASUT_CLIENT_SECRET"
PARASUT_USERNAME_ENV = "BILLING_PARASUT_USERNAME"
PARASUT_PASSWORD_ENV = "BILLING_PARASUT_PASSWORD"
PARASUT_DRY_RUN_ENV = "BILLING_PARASUT_DRY_RUN"
ALERT_WEBHOOK_URL_ENV = "BILLING_ALERT_WEBHOOK_URL"
ALERT_WEBHOOK_SECRET_ENV = "BILLING_ALERT_WEBHOOK_SECRET"


def state_dir() -> Path:
    path = Path(os.environ.get(STATE_DIR_ENV) or ".billing").expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from .errors import ConfigError

        raise ConfigError(f"{STATE_DIR_ENV}: cannot create the state directory {path} ({exc.strerror}); "
                          f"set {STATE_DIR_ENV} to a directory this user can write") from None
    return path


def chdb_path() -> Path:
    return state_dir() / "chdb"


def env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


# Typed settings: a value that is not what the setting takes is refused with the setting's name,
# when the definitions load, rather than as int()'s "invalid literal" from deep inside, or (a flag)
# silently read as off. None of these is a secret, so the value is shown.

def whole_number_env(name: str, default: int, minimum: int = 1) -> int:
    value = env(name)
    if value is None:
        return default
    try:
        number = int(value.strip())
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise _refused(name, value, f"a whole number of at least {minimum}")
    return number


def decimal_env(name: str, default: str, minimum: Decimal = Decimal(0)) -> Decimal:
    value = env(name) or default
    try:
        number = Decimal(value.strip())
    except ArithmeticError:
        number = None
    if number is None or not number.is_finite() or number < minimum:
        raise _refused(name, value, f"a decimal number of at least {minimum}")
    return number


def flag_env(name: str) -> bool:
    value = (env(name) or "0").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise _refused(name, os.environ[name], "1, true, yes or on; 0, false, no or off")


def _refused(name: str, value: str, wanted: str) -> Exception:
    from .errors import ConfigError

    return ConfigError(f"{name}={value!r} is not {wanted}")
