"""Error reports to Sentry, when ``SENTRY_DSN`` is set and sentry-sdk is installed
(``pip install 'elysium[sentry]'``). Without the DSN, sentry-sdk is not even imported.

Each event is tagged ``request_id`` with the id the shopper sees as the error page's
"Reference", so a quoted reference finds both the log lines and the report. What a report
carries is kept to what finds the bug: no request bodies (addresses, emails, engravings), no
query strings (a guest's order token), no local variables of the frames (which hold the
same), no cookies or client addresses, and a secret that is part of a path is sent as its name.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, has_request_context, request

from elysium.logs import SECRET_URL_PARTS, request_id


def init_app(app: Flask) -> None:
    dsn = app.config.get("SENTRY_DSN")
    if not dsn:
        return
    try:
        import sentry_sdk
        from sentry_sdk.integrations.flask import FlaskIntegration
    except ImportError:
        app.logger.warning(
            "SENTRY_DSN is set but sentry-sdk is not installed (pip install 'elysium[sentry]'): "
            "errors are not reported to Sentry."
        )
        return
    sentry_sdk.init(
        dsn=dsn,
        environment=app.config["ELYSIUM_ENV"],
        integrations=[FlaskIntegration()],
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        before_send=tag_request,
    )


# Headers that carry another page's address, which may hold a link's secret.
LINK_HEADERS = frozenset({"referer", "hx-current-url"})


def tag_request(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """Tag the event with the request id; keep secrets and personal data out of it."""
    if not has_request_context():
        return event
    event.setdefault("tags", {})["request_id"] = request_id()
    details = event.get("request")
    if isinstance(details, dict):
        details.pop("query_string", None)
        headers = details.get("headers")
        if isinstance(headers, dict):
            # The page the browser came from may be a link with a secret (a quote's page).
            for name in [name for name in headers if name.lower() in LINK_HEADERS]:
                del headers[name]
        url = details.get("url")
        if isinstance(url, str):
            for name, value in (request.view_args or {}).items():
                if name in SECRET_URL_PARTS and isinstance(value, str) and value:
                    url = url.replace(value, f"<{name}>")
            details["url"] = url
    return event
