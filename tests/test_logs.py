"""Log lines an operator can search: the request id on every line of a request, on the
response and on the error page; JSON lines on request; errors to Sentry when it is set up."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flask import current_app

from elysium.config import ConfigurationError
from elysium.logs import TextFormatter, install_handler
from tests.conftest import PROJECT_ROOT, make_app, page_text

NEW_ID = re.compile(r"[A-Z2-7]{10}")


@pytest.fixture(autouse=True)
def _text_logs_afterwards() -> Iterator[None]:
    """Log lines are the process's: the other tests' apps log as they did before these."""
    yield
    install_handler(TextFormatter())


@pytest.fixture
def json_app(app):
    shop = make_app(
        app.config["SQLALCHEMY_DATABASE_URI"], LOG_FORMAT="json", PROPAGATE_EXCEPTIONS=False
    )

    @shop.get("/boom")
    def boom():
        current_app.logger.warning("The clasp is loose")
        logging.getLogger("elysium.services.workshop").info("Sent to the workshop")
        raise RuntimeError("the clasp broke")

    return shop


def json_lines(text: str) -> list[dict]:
    """Every line written, each of which must be one JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_every_line_logged_for_a_request_carries_its_id(json_app, capsys):
    capsys.readouterr()
    response = json_app.test_client().get("/boom", headers={"X-Request-ID": "lb-7f3a_91c2"})

    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "lb-7f3a_91c2"
    assert "Reference lb-7f3a_91c2" in page_text(response)
    lines = json_lines(capsys.readouterr().err)
    assert [line["message"] for line in lines] == [
        "The clasp is loose",
        "Sent to the workshop",
        "Exception on /boom [GET]",
        lines[-1]["message"],
    ]
    for line in lines:
        assert line["request_id"] == "lb-7f3a_91c2"
        assert (line["method"], line["path"]) == ("GET", "/boom")
        assert set(line) >= {"time", "level", "logger", "message"}
    warning, info, error, access = lines
    assert (warning["level"], warning["logger"]) == ("WARNING", "elysium")
    assert (info["level"], info["logger"]) == ("INFO", "elysium.services.workshop")
    assert error["level"] == "ERROR"
    assert "RuntimeError: the clasp broke" in error["exception"]
    assert access["logger"] == "elysium.access"
    assert access["status"] == 500
    assert access["duration_ms"] >= 0
    assert "exception" not in access


@pytest.mark.parametrize(
    "incoming", [None, "", "has space", "semi;colon", "x" * 65, "ünïcode", "<script>"]
)
def test_a_missing_or_malformed_request_id_is_replaced_by_a_new_one(client, incoming):
    headers = {} if incoming is None else {"X-Request-ID": incoming}
    first = client.get("/no-such-page", headers=headers)
    second = client.get("/no-such-page", headers=headers)

    ids = first.headers["X-Request-ID"], second.headers["X-Request-ID"]
    assert all(NEW_ID.fullmatch(rid) for rid in ids)
    assert ids[0] != ids[1]
    assert f"Reference {ids[0]}" in page_text(first)


def test_every_response_names_its_request(client):
    assert NEW_ID.fullmatch(client.get("/healthz").headers["X-Request-ID"])
    assert client.get("/", headers={"X-Request-ID": "abc"}).headers["X-Request-ID"] == "abc"


def test_htmx_gets_the_reference_with_a_server_error(json_app):
    client = json_app.test_client()
    response = client.get("/boom", headers={"HX-Request": "true", "X-Request-ID": "R2D2"})
    assert response.status_code == 500
    assert response.headers["HX-Retarget"] == "#messages"
    assert "Reference R2D2" in page_text(response)


def test_logged_paths_hold_no_query_string_and_no_secret_token(json_app, capsys):
    client = json_app.test_client()
    capsys.readouterr()
    client.get("/shop?q=ada.lovelace@example.com")
    client.get("/auth/reset/IjEi.Zq3x9k.s3cr3t-reset-token")
    client.get("/orders/EL-100?token=s3cr3t-guest-token")

    written = capsys.readouterr().err
    assert "ada.lovelace@example.com" not in written
    assert "s3cr3t" not in written
    logged = {line["path"] for line in json_lines(written) if line["logger"] == "elysium.access"}
    assert logged == {"/shop", "/auth/reset/<token>", "/orders/EL-100"}


def test_text_lines_outside_production_json_in_production(app, capsys):
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    make_app(url).test_client().get("/no-such-page", headers={"X-Request-ID": "T1"})
    text_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(
        r".* INFO elysium\.access \[T1\]: GET /no-such-page 404 [\d.]+ ms", text_line
    )

    production = make_app(
        url,
        ELYSIUM_ENV="production",
        SITE_URL="https://www.elysium.example",
        SINGLE_PROCESS=True,
    )
    capsys.readouterr()
    production.test_client().get(
        "/no-such-page", base_url="https://www.elysium.example", headers={"X-Request-ID": "P1"}
    )
    (line,) = json_lines(capsys.readouterr().err)
    assert (line["request_id"], line["path"], line["status"]) == ("P1", "/no-such-page", 404)


def test_an_unknown_log_format_is_refused_at_start_up(app):
    with pytest.raises(ConfigurationError, match="LOG_FORMAT"):
        make_app(app.config["SQLALCHEMY_DATABASE_URI"], LOG_FORMAT="xml")


# Sentry. Its SDK is set up once per process, so each check runs the shop in a process of its own.

SHOP_WITH_A_CRASH = """
import json, sys
from elysium import create_app

app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "PROPAGATE_EXCEPTIONS": False})

@app.get("/boom/<token>")
def boom(token):
    raise RuntimeError("the clasp broke")

came_from = "https://shop.example/bespoke/quote/s3cr3t-token"
response = app.test_client().get(
    "/boom/s3cr3t-token?email=ada@example.com",
    headers={"X-Request-ID": "SENTRY42", "Referer": came_from, "HX-Current-URL": came_from},
)
if "sentry_sdk" in sys.modules:
    import sentry_sdk
    sentry_sdk.flush(timeout=10)
print(json.dumps({"status": response.status_code, "sentry_loaded": "sentry_sdk" in sys.modules}))
"""


def run_shop_with_a_crash(tmp_path, **settings: str) -> dict:
    env = {
        **os.environ,
        "ELYSIUM_ENV": "testing",
        "SECRET_KEY": "test-secret-key-not-for-production",
        "ELYSIUM_INSTANCE_PATH": str(tmp_path),
        **settings,
    }
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", SHOP_WITH_A_CRASH],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # The shop's own log of the crash names the path without the link's secret.
    assert "Exception on /boom/<token> [GET]" in done.stderr + done.stdout
    assert "s3cr3t-token" not in done.stderr + done.stdout
    return json.loads(done.stdout.strip().splitlines()[-1])


class SentryIngest:
    """Stands in for Sentry's ingest endpoint: keeps every envelope it is sent."""

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "br":
                    import brotli

                    body = brotli.decompress(body)
                ingest.envelopes.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_port}/42"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SentryIngest:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict]:
        found = []
        for envelope in self.envelopes:
            lines = envelope.split(b"\n")[1:]
            for header, payload in zip(lines[::2], lines[1::2], strict=False):
                if json.loads(header).get("type") == "event":
                    found.append(json.loads(payload))
        return found


def test_without_a_dsn_sentry_is_never_loaded(tmp_path):
    outcome = run_shop_with_a_crash(tmp_path)
    assert outcome == {"status": 500, "sentry_loaded": False}


def test_a_crash_reaches_sentry_tagged_with_the_request_id(tmp_path):
    pytest.importorskip("sentry_sdk")
    with SentryIngest() as sentry:
        outcome = run_shop_with_a_crash(tmp_path, SENTRY_DSN=sentry.dsn)

    assert outcome == {"status": 500, "sentry_loaded": True}
    (event,) = sentry.events()
    (exception,) = event["exception"]["values"]
    assert (exception["type"], exception["value"]) == ("RuntimeError", "the clasp broke")
    assert event["tags"]["request_id"] == "SENTRY42"
    assert event["environment"] == "testing"
    assert event["request"]["url"].endswith("/boom/<token>")
    sent = b"".join(sentry.envelopes)
    assert b"s3cr3t-token" not in sent
    assert b"ada@example.com" not in sent
