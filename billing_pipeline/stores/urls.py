"""URLs in messages and logs: never with their password or another credential."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

# libpq (and clickhouse-connect's DSN) also take the password as a query parameter
_SECRET_PARAMETER = re.compile(r"(?i)((?:^|&)(?:password|sslpassword|passwd|pwd|token|access_token|secret)=)[^&]*")


def userinfo_is_ambiguous(url: str) -> bool:
    """An '@', '/', '?' or '#' left unencoded in the user name or password. Parsers then disagree on
    where the password ends (libpq splits at the first '@', urllib at the last; '/' starts the
    database), so part of the password would be taken for the host or the database and named in
    messages."""
    if "://" not in url:  # a key=value connection string: no URL to misread
        return False
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return False
    return url.count("@") > (1 if "@" in netloc else 0)


def ambiguous_url_message(setting: str) -> str:
    return (f"{setting} is not a well-formed URL: percent-encode any '@', '/', '?' or '#' in its user name or "
            "password (%40, %2F, %3F, %23); the URL is not shown, as part of it may be the password")


def redact(url: str) -> str:
    """The URL with its password replaced, safe for logs and error messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if userinfo_is_ambiguous(url):
        return "<URL not shown: an unencoded '@', '/', '?' or '#' in its user name or password>"
    redacted = url
    if password:
        redacted = urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@")))
    if _SECRET_PARAMETER.search(parts.query):
        redacted = redacted.replace(f"?{parts.query}", "?" + _SECRET_PARAMETER.sub(r"\1***", parts.query), 1)
    return redacted


class _RequestLogHostOnly(logging.Filter):
    """httpx logs every request's full URL at INFO ('HTTP Request: POST <url> ...'). Some of ours are
    credentials themselves (the alert webhook's URL, a Parasut PDF's signed link): the line keeps
    the method, host and status; the path and query are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("HTTP Request:") and isinstance(record.args, tuple) and len(record.args) > 1:
            url = urlsplit(str(record.args[1]))
            record.args = (record.args[0], f"{url.scheme}://{url.netloc.rpartition('@')[2]}/...", *record.args[2:])
        return True


def hide_request_paths_in_http_log() -> None:
    """Install the filter on httpx's logger (once per process)."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RequestLogHostOnly) for f in logger.filters):
        logger.addFilter(_RequestLogHostOnly())
