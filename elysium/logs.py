"""The shop's log lines: one per record, on stderr, each tied to the request it was logged in.

Every request has a **request id**: the ``X-Request-ID`` it came with when that is short and
plain (a reverse proxy's own id, so its log and ours can be joined), else a new one of ten
characters (``7KQ2MZX4RA``). It goes back in the ``X-Request-ID`` response header, error
pages show it as their "Reference" so a shopper can quote it, and every line logged while the
request is handled carries it, whichever logger wrote the line. One access line per request
(``elysium.access``) says method, path, status and how long the shop took.

``LOG_FORMAT`` chooses how a line looks: ``text`` (readable, the default outside production)
or ``json`` (one JSON object per line, the default in production), with the fields ``time``,
``level``, ``logger``, ``message``, and when there is one ``request_id``, ``method``,
``path``, ``status``, ``duration_ms`` and ``exception`` (the traceback).

Logged paths never hold a query string (it can carry an email address or a guest's order
token), and a secret that is part of a path (``/auth/reset/<token>``) is logged as its name.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, has_request_context, request, request_finished, request_started
from flask.logging import default_handler

from elysium.config import ConfigurationError

HEADER = "X-Request-ID"
FORMATS = ("text", "json")
# An id a proxy hands us is used only if it can't break a log line or a page: short and plain.
WELL_FORMED_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# RFC 4648's base32 alphabet: capitals and 2-7, so a shopper reading one out can't confuse
# 0 with O, 1 with I or 8 with B.
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
ID_LENGTH = 10
# Parts of a URL rule whose value is a secret (a password-reset or confirmation link).
SECRET_URL_PARTS = frozenset({"token"})
# Where a request keeps its id and when it started (the WSGI environ lives as long as it does).
ID_KEY = "elysium.request_id"
STARTED_KEY = "elysium.request_started"
ACCESS = logging.getLogger("elysium.access")
# What every LogRecord has; anything else on a record was passed with ``extra=`` and is logged.
STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "method",
    "path",
    "request_label",
}


def log_format(value: str | None, environment: str) -> str:
    """``LOG_FORMAT``, or its default: ``json`` in production, ``text`` elsewhere."""
    chosen = (value or "").strip().lower() or ("json" if environment == "production" else "text")
    if chosen not in FORMATS:
        raise ConfigurationError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {value!r}")
    return chosen


def init_app(app: Flask) -> None:
    """Send every log line to stderr in ``LOG_FORMAT``; the app logs at ``LOG_LEVEL``,
    libraries only speak up for warnings. Give each request its id and its access line."""
    chosen = log_format(app.config.get("LOG_FORMAT"), app.config["ELYSIUM_ENV"])
    app.config["LOG_FORMAT"] = chosen
    install_handler(formatter(chosen))
    app.logger.removeHandler(default_handler)  # the line reaches stderr once, through ours
    app.logger.setLevel(app.config["LOG_LEVEL"])
    request_started.connect(start_request, app)
    app.after_request(send_request_id)
    request_finished.connect(log_access, app)


def formatter(chosen: str) -> logging.Formatter:
    return JsonFormatter() if chosen == "json" else TextFormatter()


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (as logging's last resort
    does), so a stream swapped in later (a test capturing output) gets the lines."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RequestContext())

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def install_handler(chosen: logging.Formatter) -> None:
    """One handler of ours on the root logger, however many apps a process makes; the last
    app made decides the format."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, StderrHandler)), None)
    if handler is None:
        handler = StderrHandler()
        root.addHandler(handler)
    handler.setFormatter(chosen)


def request_id() -> str | None:
    """The current request's id (made on first use), or None outside a request."""
    if not has_request_context():
        return None
    environ = request.environ
    if (known := environ.get(ID_KEY)) is not None:
        return known
    incoming = environ.get("HTTP_X_REQUEST_ID", "").strip()
    chosen = incoming if WELL_FORMED_ID.fullmatch(incoming) else new_request_id()
    environ[ID_KEY] = chosen
    return chosen


def new_request_id() -> str:
    # 32 letters: each random byte picks one evenly (256 is a multiple of 32), in one read.
    return "".join(ID_ALPHABET[byte % len(ID_ALPHABET)] for byte in secrets.token_bytes(ID_LENGTH))


def logged_path() -> str:
    """The request's path as logs may show it: no query string, and a secret part of the
    path replaced by its name (``/auth/reset/<token>``). Control characters are escaped, so
    a path can't start a forged line in a text log."""
    path = request.path
    for name, value in (request.view_args or {}).items():
        if name in SECRET_URL_PARTS and isinstance(value, str) and value:
            path = path.replace(value, f"<{name}>")
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in path)


class LoggedPaths:
    """Mixed into the app: an unhandled exception is logged with the path as logs may show it
    (:func:`logged_path`), not Flask's raw ``request.path``, which would write the token of a
    reset, confirmation or quote link into the log."""

    logger: logging.Logger

    def log_exception(self, exc_info: Any) -> None:
        self.logger.error("Exception on %s [%s]", logged_path(), request.method, exc_info=exc_info)


class RequestContext(logging.Filter):
    """Stamps each record logged while a request is handled with its id, method and path."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and not hasattr(record, "request_id"):
            record.request_id = request_id()
            record.method = request.method
            record.path = logged_path()
        return True


def start_request(sender: Flask, **extra: Any) -> None:
    """Before every hook and view: the clock of the access line starts here."""
    request.environ[STARTED_KEY] = time.perf_counter()


def send_request_id(response: Response) -> Response:
    response.headers[HEADER] = request_id() or ""
    return response


def log_access(sender: Flask, response: Response, **extra: Any) -> None:
    """The access line, once the response is final. The load balancer's health checks are
    only logged at DEBUG while they pass: every few seconds, they would drown the rest."""
    started = request.environ.get(STARTED_KEY)
    duration_ms = round((time.perf_counter() - started) * 1000, 1) if started else None
    quiet = request.endpoint == "site.healthz" and response.status_code < 400
    ACCESS.log(
        logging.DEBUG if quiet else logging.INFO,
        "%s %s %s %s ms",
        request.method,
        logged_path(),
        response.status_code,
        "?" if duration_ms is None else duration_ms,
        extra={"status": response.status_code, "duration_ms": duration_ms},
    )


class TextFormatter(logging.Formatter):
    """``2025-05-01 10:00:00,123 WARNING elysium [7KQ2MZX4RA]: message``; the id only on lines
    logged while a request is handled."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_label)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.request_label = f" [{rid}]" if rid else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (a newline in a message or a traceback is escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "method", "path"):
            if (value := getattr(record, name, None)) is not None:
                entry[name] = value
        for name, value in vars(record).items():
            if name not in STANDARD_ATTRIBUTES and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)
