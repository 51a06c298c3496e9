"""The app factory, its settings, error pages and security headers."""

from __future__ import annotations

import os
import runpy
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import request

from elysium import create_app
from elysium.config import ConfigurationError, normalise_database_url
from tests.conftest import PROJECT_ROOT, app_settings, database_url, make_app, page_text
from tests.support.local_redis import REDIS_URL, require_redis


def test_production_refuses_to_start_without_a_secret_key(monkeypatch, tmp_path):
    monkeypatch.setenv("ELYSIUM_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("ELYSIUM_INSTANCE_PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match="SECRET_KEY is not set"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})


def test_production_starts_with_a_secret_key_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ELYSIUM_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "a" * 64)
    monkeypatch.setenv("SITE_URL", "https://www.elysium.example")
    monkeypatch.setenv("SINGLE_PROCESS", "1")
    monkeypatch.setenv("ELYSIUM_INSTANCE_PATH", str(tmp_path))
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})
    assert app.config["SECRET_KEY"] == "a" * 64
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert not (tmp_path / "secret_key").exists()


def test_development_makes_a_secret_key_once_and_keeps_it(monkeypatch, tmp_path):
    monkeypatch.setenv("ELYSIUM_ENV", "development")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("ELYSIUM_INSTANCE_PATH", str(tmp_path))
    first = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}).config["SECRET_KEY"]
    second = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}).config["SECRET_KEY"]
    assert first == second
    assert len(first) >= 64
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_database_url_chooses_the_database_and_defaults_to_sqlite_in_instance(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("ELYSIUM_ENV", "development")
    monkeypatch.setenv("ELYSIUM_INSTANCE_PATH", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    app = create_app()
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/elysium.sqlite3"
    monkeypatch.setenv("DATABASE_URL", "postgres://shop@db.internal/elysium")
    app = create_app()
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://shop@db.internal/elysium"


def test_an_unknown_environment_name_is_refused(monkeypatch):
    monkeypatch.setenv("ELYSIUM_ENV", "staging-ish")
    with pytest.raises(ConfigurationError, match="ELYSIUM_ENV"):
        create_app({"SECRET_KEY": "x"})


def test_normalise_database_url_leaves_other_drivers_alone():
    assert normalise_database_url("sqlite:///x.db") == "sqlite:///x.db"
    assert normalise_database_url("postgresql+psycopg://a/b") == "postgresql+psycopg://a/b"


DOTENV = "# Written by tests/test_app.py for one test; delete it if it was left behind.\n" + (
    "EMAIL_BACKEND=resend\nRESEND_API_KEY=re_from_a_dotenv_file\nSHOP_PAGE_SIZE=5\n"
)


@contextmanager
def dotenv_in_the_checkout() -> Iterator[None]:
    """A ``.env`` beside wsgi.py for the length of the block; never replaces a developer's."""
    path = PROJECT_ROOT / ".env"
    try:
        with path.open("x") as handle:
            handle.write(DOTENV)
    except FileExistsError:
        pytest.skip("this checkout has a .env of its own; the test won't touch it")
    try:
        yield
    finally:
        path.unlink()


@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    """None of the settings DOTENV names; whatever a test leaves in os.environ is undone."""
    for name in ("EMAIL_BACKEND", "RESEND_API_KEY", "SHOP_PAGE_SIZE", "FLASK_SKIP_DOTENV"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("ELYSIUM_INSTANCE_PATH", str(tmp_path))
    return monkeypatch


def test_the_app_factory_reads_only_the_environment_it_is_given_never_a_dotenv_file(
    clean_environment, tmp_path
):
    """Every test makes its app with the factory: a developer's ``EMAIL_BACKEND=resend`` in
    ``.env`` must not send the tests' emails."""
    clean_environment.chdir(tmp_path)
    (tmp_path / ".env").write_text(DOTENV)
    with dotenv_in_the_checkout():
        app = create_app({"ELYSIUM_ENV": "testing", "SECRET_KEY": "x" * 32})
    assert app.config["EMAIL_BACKEND"] == "console"
    assert app.config["RESEND_API_KEY"] is None
    assert app.config["SHOP_PAGE_SIZE"] == 12
    assert "EMAIL_BACKEND" not in os.environ


def test_wsgi_py_loads_dotenv_unless_flask_skip_dotenv_is_set(clean_environment):
    """gunicorn (and ``make run``'s flask, which imports wsgi.py) read ``.env``; the processes
    the suite starts set ``FLASK_SKIP_DOTENV``, as the flask command itself honours it."""
    clean_environment.setenv("ELYSIUM_ENV", "testing")
    clean_environment.setenv("SECRET_KEY", "x" * 32)
    wsgi = str(PROJECT_ROOT / "wsgi.py")
    with dotenv_in_the_checkout():
        clean_environment.setenv("FLASK_SKIP_DOTENV", "1")
        skipped = runpy.run_path(wsgi)["app"]
        clean_environment.delenv("FLASK_SKIP_DOTENV")
        loaded = runpy.run_path(wsgi)["app"]
    assert skipped.config["EMAIL_BACKEND"] == "console"
    assert loaded.config["EMAIL_BACKEND"] == "resend"
    assert loaded.config["RESEND_API_KEY"] == "re_from_a_dotenv_file"
    assert loaded.config["SHOP_PAGE_SIZE"] == 5


def test_the_suites_database_is_test_database_url_or_a_throwaway_file_never_database_url(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("DATABASE_URL", "postgresql://shop@db.internal/elysium")
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    assert database_url(tmp_path) == f"sqlite:///{tmp_path / 'test.sqlite3'}"
    monkeypatch.setenv("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/elysium_test")
    assert database_url(tmp_path) == "postgresql+psycopg://postgres@127.0.0.1:5432/elysium_test"


def test_the_suite_runs_without_the_shops_settings_from_the_shell(app):
    assert "EMAIL_BACKEND" in app_settings()
    assert "DATABASE_URL" in app_settings()
    exported = app_settings() & os.environ.keys()
    assert exported <= {"TEST_DATABASE_URL", "ELYSIUM_INSTANCE_PATH"}
    assert app.config["EMAIL_BACKEND"] == "console"


def test_unknown_page_is_a_404_in_the_shops_look(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    page = page_text(response)
    assert "We couldn't find that page" in page
    assert "ELYSIUM" in page
    assert "Traceback" not in page
    # Drawn for this visitor (their CSRF token, their header): no cache keeps it for others.
    assert response.headers["Cache-Control"] == "no-store"


def test_htmx_gets_a_small_error_fragment_in_the_messages_region(client):
    response = client.htmx("GET", "/no-such-page")
    assert response.status_code == 404
    assert response.headers["HX-Retarget"] == "#messages"
    body = page_text(response)
    assert "<html" not in body
    assert "We couldn't find that page" in body
    assert response.headers["Cache-Control"] == "no-store"


def test_wrong_method_is_a_405_page_with_allow_header(client):
    response = client.post("/healthz")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert "That isn't allowed here" in page_text(response)


def test_too_large_request_is_a_413_page(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'large.db'}", MAX_CONTENT_LENGTH=1024)

    @app.post("/echo")
    def echo():
        return request.form.get("note", "")

    big = app.test_client().post("/echo", data={"note": "x" * 2048})
    assert big.status_code == 413
    assert "That was too large" in page_text(big)


def test_a_crash_is_a_500_page_without_a_traceback(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'crash.db'}", PROPAGATE_EXCEPTIONS=False)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    page = page_text(response)
    assert "Something went wrong on our side" in page
    assert "secret internals" not in page
    assert "Traceback" not in page


@pytest.mark.parametrize("url", ["/", "/shop", "/healthz", "/no-such-page", "/robots.txt"])
def test_every_response_carries_security_headers(client, catalogue, url):
    headers = client.get(url).headers
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "base-uri 'none'" in csp.split("; ")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_pages_have_no_inline_scripts_or_styles(client, catalogue):
    for url in ["/", "/shop", "/shop/aurelia-solitaire-ring", "/collections/aurelia"]:
        page = client.get(url).get_data(as_text=True)
        assert " style=" not in page
        assert "<style" not in page
        assert " hx-on" not in page
        for script in page.split("<script")[1:]:
            opening = script.split(">", 1)[0]
            assert "src=" in opening or 'type="application/ld+json"' in opening


def test_htmx_is_vendored_with_its_version_and_configured_by_meta_tag(client, app):
    page = client.get("/").get_data(as_text=True)
    assert "/static/vendor/htmx-2.0.11.min.js" in page
    assert 'name="htmx-config"' in page
    assert '"historyCacheSize":0' in page
    assert '"includeIndicatorStyles":false' in page
    with client.get("/static/vendor/htmx-2.0.11.min.js") as script:
        assert script.status_code == 200
        assert b"htmx" in script.data


def test_healthz_reports_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok"}


def test_healthz_reports_redis_and_stays_200_without_it(app):
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    require_redis()
    # The suite's rate limits stay in memory (their Redis fallback is tested elsewhere).
    with_redis = make_app(url, REDIS_URL=REDIS_URL, RATELIMIT_STORAGE_URI="memory://")
    answered = with_redis.test_client().get("/healthz")
    assert answered.status_code == 200
    assert answered.json == {"status": "ok", "database": "ok", "redis": "ok"}

    # Nothing listens there: the shop still sells, so the server stays in the pool.
    without = make_app(url, REDIS_URL="redis://127.0.0.1:1/0", RATELIMIT_STORAGE_URI="memory://")
    response = without.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "degraded", "database": "ok", "redis": "unreachable"}


def test_healthz_is_503_when_the_database_is_unreachable(tmp_path):
    app = make_app("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["database"] == "unreachable"


@pytest.mark.parametrize("minutes", ["29", "61", "1440"])
def test_checkout_expiry_outside_30_to_60_minutes_is_refused(monkeypatch, minutes):
    monkeypatch.setenv("CHECKOUT_EXPIRY_MINUTES", minutes)
    with pytest.raises(ConfigurationError, match="CHECKOUT_EXPIRY_MINUTES"):
        create_app({"SECRET_KEY": "x", "ELYSIUM_ENV": "testing"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STAFF_EMAIL", ""),  # BESPOKE_NOTIFY_EMAIL left empty falls back to STAFF_EMAIL
        *(
            (name, value)
            for name in ("STAFF_EMAIL", "BESPOKE_NOTIFY_EMAIL")
            for value in (
                "Atelier <atelier@elysium.example>",
                "a@elysium.example, b@elysium.example",
            )
        ),
    ],
)
def test_an_address_of_the_house_that_isnt_one_address_is_refused_at_start(
    monkeypatch, name, value
):
    """The shop writes to these on its main paths (a piece running low at checkout, a
    dispute's webhook, a bespoke request): one that isn't a single address made every such
    checkout answer 500, with no order made."""
    monkeypatch.setenv(name, value)
    if name == "STAFF_EMAIL":
        monkeypatch.setenv("BESPOKE_NOTIFY_EMAIL", "bespoke@elysium.example")
    with pytest.raises(ConfigurationError, match=name):
        create_app({"SECRET_KEY": "x", "ELYSIUM_ENV": "testing"})


def test_a_template_asked_for_again_with_globals_of_its_own_never_gives_them_to_all(app):
    """Templates see the environment's globals themselves (``elysium.Templates``): Jinja
    would write a loaded template's new globals into them, for every template to see. It is
    refused instead."""
    templates = app.jinja_env
    templates.get_template("emails/payment_received.txt")

    with pytest.raises(AttributeError):  # a read-only view has no update()
        templates.get_template("emails/payment_received.txt", globals={"leaked": "yes"})

    assert "leaked" not in templates.globals
    assert templates.from_string("{{ leaked is defined }}").render() == "False"
