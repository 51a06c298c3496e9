"""Rate limits on sign-in, sign-up and password reset, with a page that says when to retry."""

from __future__ import annotations

import socket

import pytest

from elysium.extensions import limiter
from tests.conftest import PASSWORD, AuthActions, make_app, page_text


def test_sign_in_is_limited_to_5_a_minute_per_account(client, auth):
    auth.create_user()
    for _ in range(5):
        assert auth.login(password="wrong password here").status_code == 422
    limited = auth.login()
    assert limited.status_code == 429
    page = page_text(limited)
    assert "Too many attempts. Please try again in" in page
    assert 'value="ada@example.com"' in page
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    other_account = auth.login(email="grace@example.com", password="whatever it is")
    assert other_account.status_code == 422


def test_sign_in_is_limited_to_20_a_minute_per_ip(auth):
    for number in range(20):
        response = auth.login(email=f"visitor{number}@example.com", password="not the one")
        assert response.status_code == 422
    assert auth.login(email="visitor99@example.com", password="not the one").status_code == 429


def test_sign_up_is_limited_to_5_an_hour_per_ip(client):
    for number in range(5):
        response = client.submit(
            "/auth/register", {"email": f"new{number}@example.com", "password": PASSWORD}
        )
        assert response.status_code == 303
    limited = client.submit("/auth/register", {"email": "new9@example.com", "password": PASSWORD})
    assert limited.status_code == 429
    assert "minutes" in page_text(limited)
    assert 'value="new9@example.com"' in page_text(limited)


def test_password_reset_is_limited_to_3_an_hour_per_email(client, auth):
    auth.create_user()
    for _ in range(3):
        assert client.submit("/auth/forgot", {"email": "ada@example.com"}).status_code == 303
    assert client.submit("/auth/forgot", {"email": "ada@example.com"}).status_code == 429
    assert client.submit("/auth/forgot", {"email": "grace@example.com"}).status_code == 303


def redis_is_running() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not redis_is_running(), reason="no Redis on 127.0.0.1:6379")
def test_with_redis_the_limit_is_shared_by_every_server(app, tmp_path):
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    settings = {"RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0"}
    first_server = make_app(url, **settings)
    limiter.reset()  # counts left in Redis by an earlier run
    with first_server.app_context():
        from tests.conftest import create_user

        create_user()
    for _ in range(5):
        client = first_server.test_client()
        assert AuthActions(first_server, client).login(password="wrong guess!").status_code == 422
    second_server = make_app(url, **settings)
    client = second_server.test_client()
    try:
        assert AuthActions(second_server, client).login().status_code == 429
    finally:
        make_app(url)  # the limiter is one object: give it back its in-memory storage


def test_other_limited_requests_get_a_429_page_or_fragment_that_says_when(app):
    app = make_app(app.config["SQLALCHEMY_DATABASE_URI"])

    @app.get("/__limited")
    @limiter.limit("1/minute")
    def limited():
        return "ok"

    client = app.test_client()

    assert client.get("/__limited").status_code == 200
    page = client.get("/__limited")
    assert page.status_code == 429
    assert "Please try again in" in page_text(page)
    assert int(page.headers["Retry-After"]) > 0
    fragment = client.htmx("GET", "/__limited")
    assert fragment.status_code == 429
    assert fragment.headers["HX-Retarget"] == "#messages"
    assert "<html" not in fragment.get_data(as_text=True)
