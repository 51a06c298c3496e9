"""Rate limits on sign-in, sign-up and password reset: they hold across every worker (Redis),
survive Redis failing, and no stranger can lock the owner out of their account.

The multi-worker tests run the shop under gunicorn with three workers against the Redis on
127.0.0.1:6379, each run under a key prefix of its own (removed afterwards). Without Redis they
are skipped, unless ``REQUIRE_REDIS`` is set (as in CI), which makes them fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import requests
from flask import Flask
from itsdangerous.encoding import base64_decode, base64_encode
from sqlalchemy import select

from elysium import create_app
from elysium.config import REDIS_TIMEOUT_SECONDS, ConfigurationError
from elysium.extensions import db, limiter
from elysium.models import User
from elysium.web.throttle import PACED
from tests.conftest import (
    CHEAP_PASSWORD_HASHING,
    PASSWORD,
    PROJECT_ROOT,
    AuthActions,
    ShopClient,
    link_in,
    make_app,
    page_text,
    sent_emails,
)
from tests.html import Page, csrf_token
from tests.support.local_redis import REDIS, require_redis
from tests.support.oidc_provider import OIDCProvider
from tests.support.shop_process import ShopProcess, free_port
from tests.support.tcp_proxy import TcpProxy

TOO_MANY = "Too many attempts. Please try again in"
WRONG = "not the password at all"
OWNER_ADDRESS = "192.0.2.1"
DEVICE_COOKIE = "elysium_device"


def stranger(number: int) -> str:
    return f"203.0.113.{number}"


def sign_in_from(client: ShopClient, address: str, password: str = PASSWORD, **form):
    client.get("/auth/login")
    return client.post(
        "/auth/login",
        data={"csrf_token": client.csrf_token, "email": "ada@example.com", "password": password}
        | form,
        environ_overrides={"REMOTE_ADDR": address},
    )


def device_cookie(response) -> str | None:
    """The Set-Cookie header that gives the browser its device cookie, if the response has one."""
    return next(
        (
            header
            for header in response.headers.getlist("Set-Cookie")
            if header.split("=", 1)[0].endswith(DEVICE_COOKIE)
        ),
        None,
    )


def test_an_address_gets_5_wrong_passwords_a_minute_for_an_account(client, auth):
    auth.create_user()
    for _ in range(5):
        assert sign_in_from(client, stranger(1), WRONG).status_code == 422
    refused = sign_in_from(client, stranger(1))
    assert refused.status_code == 429
    page = page_text(refused)
    assert TOO_MANY in page
    assert 'value="ada@example.com"' in page
    assert PASSWORD not in page
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert sign_in_from(client, stranger(1), email="grace@example.com").status_code == 422


def test_a_strangers_wrong_passwords_leave_other_addresses_free(app, auth):
    auth.create_user()
    for _ in range(6):
        sign_in_from(app.test_client(), stranger(1), WRONG)
    assert sign_in_from(app.test_client(), stranger(1)).status_code == 429
    assert sign_in_from(app.test_client(), OWNER_ADDRESS).status_code == 303


def test_right_passwords_do_not_use_up_the_budget(app, auth):
    auth.create_user()
    for _ in range(6):
        assert sign_in_from(app.test_client(), OWNER_ADDRESS).status_code == 303
    browser = app.test_client()
    for _ in range(5):
        assert sign_in_from(browser, OWNER_ADDRESS, WRONG).status_code == 422
    assert sign_in_from(browser, OWNER_ADDRESS).status_code == 429


def test_sign_in_is_limited_to_20_a_minute_per_address(auth):
    for number in range(20):
        response = auth.login(email=f"visitor{number}@example.com", password="not the one")
        assert response.status_code == 422
    assert auth.login(email="visitor99@example.com", password="not the one").status_code == 429


def test_sign_up_is_limited_to_5_an_hour_per_address(client):
    for number in range(5):
        response = client.submit(
            "/auth/register", {"email": f"new{number}@example.com", "password": PASSWORD}
        )
        assert response.status_code == 303
    limited = client.submit("/auth/register", {"email": "new9@example.com", "password": PASSWORD})
    assert limited.status_code == 429
    assert "minutes" in page_text(limited)
    assert 'value="new9@example.com"' in page_text(limited)


@pytest.mark.parametrize(
    ("path", "fields", "allowed"),
    [
        ("/auth/register", {"password": PASSWORD}, 5),
        ("/auth/login", {"password": "not the one"}, 20),
        ("/auth/forgot", {}, 20),
    ],
)
def test_a_per_address_limit_holds_across_one_ipv6_64(client, path, fields, allowed):
    """One home or phone line is given a whole /64 and may use any address in it: each new
    address got the whole limit again."""
    statuses = []
    for n in range(allowed + 3):
        client.get(path)
        form = {"csrf_token": client.csrf_token, "email": f"someone{n}@example.com", **fields}
        sent = client.post(
            path, data=form, environ_base={"REMOTE_ADDR": f"2001:db8:0:1::{n + 1:x}"}
        )
        statuses.append(sent.status_code)
    assert 429 in statuses, statuses


def sign_up_forwarded_for(client: ShopClient, address: str, number: int) -> int:
    client.get("/auth/register")
    form = {
        "csrf_token": client.csrf_token,
        "email": f"new{number}@example.com",
        "password": PASSWORD,
    }
    sent = client.post("/auth/register", data=form, headers={"X-Forwarded-For": address})
    return sent.status_code


def test_behind_a_proxy_sign_ups_count_the_forwarded_address_by_its_64(app):
    shop = make_app(app.config["SQLALCHEMY_DATABASE_URI"], PROXY_FIX_HOPS=1)
    client = shop.test_client()
    for n in range(5):
        assert sign_up_forwarded_for(client, f"2001:db8:0:1:{n}::1", n) == 303
    assert sign_up_forwarded_for(client, "2001:db8:0:1:ffff::9", 5) == 429
    assert sign_up_forwarded_for(client, "2001:db8:0:2::1", 6) == 303


def test_an_ipv4_address_written_as_ipv6_counts_as_itself(app):
    shop = make_app(app.config["SQLALCHEMY_DATABASE_URI"], PROXY_FIX_HOPS=1)
    client = shop.test_client()
    for n in range(5):
        address = "198.51.100.7" if n % 2 else "::ffff:198.51.100.7"
        assert sign_up_forwarded_for(client, address, n) == 303
    assert sign_up_forwarded_for(client, "198.51.100.7", 5) == 429
    assert sign_up_forwarded_for(client, "198.51.100.8", 6) == 303


def test_a_forwarded_address_with_its_port_counts_as_the_address(app):
    """Some proxies write the client's port into X-Forwarded-For (``203.0.113.5:50123``,
    ``[2001:db8::1]:50123``): the key was that text as it came, so each new connection's
    port was a fresh budget of sign-ups, sign-ins and resets (found by review)."""
    shop = make_app(app.config["SQLALCHEMY_DATABASE_URI"], PROXY_FIX_HOPS=1)
    client = shop.test_client()
    for n in range(5):
        assert sign_up_forwarded_for(client, f"198.51.100.9:{40000 + n}", n) == 303
    assert sign_up_forwarded_for(client, "198.51.100.9:41000", 5) == 429
    for n in range(5):
        assert sign_up_forwarded_for(client, f"[2001:db8:0:9::1]:{40000 + n}", 10 + n) == 303
    assert sign_up_forwarded_for(client, "[2001:db8:0:9::2]:41000", 15) == 429


def test_a_change_of_email_is_asked_5_times_an_hour_per_account_at_most(client, auth):
    """Each request writes to the address typed: without a limit, a signed-in account could
    send the shop's mail to any list of addresses."""
    auth.create_user()
    auth.login()
    client.get("/account/profile")
    for number in range(5):
        response = client.submit(
            "/account/profile",
            {"email": f"new{number}@example.com", "current_password": PASSWORD},
            action="/account/email",
        )
        assert response.status_code == 303, page_text(response)
    limited = client.submit(
        "/account/profile",
        {"email": "new9@example.com", "current_password": PASSWORD},
        action="/account/email",
    )
    assert limited.status_code == 429
    assert TOO_MANY in page_text(limited)
    assert sent_emails(client.application, "new9@example.com") == []

    # Signing out and in again counts on: the limit was the session's (found by review).
    client.post("/auth/logout", data={"csrf_token": client.csrf_token})
    auth.login()
    client.get("/account/profile")
    again = client.submit(
        "/account/profile",
        {"email": "new10@example.com", "current_password": PASSWORD},
        action="/account/email",
    )
    assert again.status_code == 429
    assert sent_emails(client.application, "new10@example.com") == []


def test_the_current_password_is_asked_10_times_an_hour_per_account_at_most(client, auth):
    """A new password, a new address and closing the account each ask for the current one:
    10 tries an hour between them, so a session taken from its owner can't guess it on and
    on. Before, a new password and closing the account took any number."""
    auth.create_user()
    auth.login()
    forms = [  # the page, where its form goes, the field for the current password, the rest
        ("/account/profile", "/account/password", "current_password", {"password": "a new one!"}),
        ("/account/delete", "/account/delete", "password", {}),
        ("/account/profile", "/account/email", "current_password", {"email": "new@example.com"}),
    ]
    for attempt in range(10):
        page, action, field, data = forms[attempt % 3]
        wrong = client.submit(page, {**data, field: f"guess {attempt}"}, action=action)
        assert wrong.status_code == 422, page_text(wrong)
        assert "password is not correct." in page_text(wrong)
    for page, action, field, data in forms:
        limited = client.submit(page, {**data, field: PASSWORD}, action=action)
        assert limited.status_code == 429
        assert TOO_MANY in page_text(limited)
        assert int(limited.headers["Retry-After"]) > 0
        # The same form, with what was typed kept (never a password).
        form = Page(limited).one(f'form[action="{action}"]')
        assert form.select_one(f'input[name="{field}"]').get("value", "") == ""
        for name, typed in data.items():
            if name != "password":
                assert form.select_one(f'input[name="{name}"]')["value"] == typed
    assert client.get("/account").status_code == 200  # still hers, unchanged


def test_password_reset_is_limited_to_3_an_hour_per_email(client, auth):
    auth.create_user()
    for _ in range(3):
        assert client.submit("/auth/forgot", {"email": "ada@example.com"}).status_code == 303
    assert client.submit("/auth/forgot", {"email": "ada@example.com"}).status_code == 429
    assert client.submit("/auth/forgot", {"email": "grace@example.com"}).status_code == 303


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


# Known devices: the browser the owner signed in with before.


def test_signing_in_with_a_password_makes_the_browser_a_known_device(client, auth):
    auth.create_user()
    cookie = device_cookie(auth.login())
    assert cookie is not None
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/;" in cookie or cookie.endswith("Path=/")
    assert "Max-Age=34560000" in cookie  # 400 days, the longest a browser keeps a cookie
    assert "Secure" not in cookie  # http:// outside production


def test_the_device_cookie_is_secure_in_production(app):
    shop = make_app(
        app.config["SQLALCHEMY_DATABASE_URI"],
        ELYSIUM_ENV="production",
        SITE_URL="https://www.elysium.example",
        SINGLE_PROCESS=True,
    )
    AuthActions(shop, shop.test_client()).create_user()
    browser = shop.test_client()
    site = "https://www.elysium.example"
    browser.get("/auth/login", base_url=site)
    signed_in = browser.post(
        "/auth/login",
        data={"csrf_token": browser.csrf_token, "email": "ada@example.com", "password": PASSWORD},
        base_url=site,
        headers={"Referer": f"{site}/auth/login"},  # checked on https
    )
    assert signed_in.status_code == 303
    cookie = device_cookie(signed_in)
    assert cookie is not None
    assert "Secure" in cookie
    assert "HttpOnly" in cookie


def test_a_confirmed_email_and_a_password_reset_make_the_browser_known_too(app, client, auth):
    client.submit("/auth/register", {"email": "grace@example.com", "password": PASSWORD})
    [confirmation] = sent_emails(app, "grace@example.com")
    confirmed = client.submit(link_in(confirmation, "/auth/confirm/"), {"password": PASSWORD})
    assert confirmed.status_code == 303
    assert device_cookie(confirmed) is not None

    auth.create_user()
    browser = app.test_client()
    browser.submit("/auth/forgot", {"email": "ada@example.com"})
    [reset_email] = sent_emails(app, "ada@example.com")
    reset = browser.submit(
        link_in(reset_email, "/auth/reset/"), {"password": "a new long password"}
    )
    assert reset.status_code == 303
    assert device_cookie(reset) is not None


def test_signing_in_with_google_makes_the_browser_known(app):
    with OIDCProvider("elysium-google-client", "elysium-google-secret") as oidc:
        shop = make_app(
            app.config["SQLALCHEMY_DATABASE_URI"],
            GOOGLE_CLIENT_ID=oidc.client_id,
            GOOGLE_CLIENT_SECRET=oidc.client_secret,
            GOOGLE_ISSUER=oidc.issuer,
        )
        browser = shop.test_client()
        browser.get("/auth/login")
        started = browser.post("/auth/google", data={"csrf_token": browser.csrf_token})
        oidc.next_identity = {
            "sub": "google-sub-1",
            "email": "grace@example.com",
            "email_verified": True,
            "given_name": "Grace",
        }
        callback = urlsplit(oidc.authorize(started.headers["Location"]))
        signed_in = browser.get(f"{callback.path}?{callback.query}")
    assert signed_in.status_code == 303
    assert device_cookie(signed_in) is not None


def owner_signed_in_before(app: Flask, auth: AuthActions) -> ShopClient:
    """The owner's own browser: it signed in to the account before, then signed out."""
    auth.create_user()
    browser = app.test_client()
    assert sign_in_from(browser, OWNER_ADDRESS).status_code == 303
    AuthActions(app, browser).logout()
    return browser


def under_attack(app: Flask) -> None:
    """Strangers at ten addresses try five wrong passwords each (a sixth is refused): 50 in
    the hour, so the account is paced, and an eleventh address has just had its attempt."""
    for number in range(1, 11):
        browser = app.test_client()
        for _ in range(5):
            assert sign_in_from(browser, stranger(number), WRONG).status_code == 422
        assert sign_in_from(browser, stranger(number), WRONG).status_code == 429
    assert sign_in_from(app.test_client(), stranger(11), WRONG).status_code == 422


def test_the_owners_browser_signs_in_whatever_strangers_tried(app, auth):
    owner = owner_signed_in_before(app, auth)
    under_attack(app)
    assert sign_in_from(app.test_client(), stranger(50)).status_code == 429

    signed_in = sign_in_from(owner, stranger(1))  # even from an address a stranger used up
    assert signed_in.status_code == 303
    assert owner.get("/account").status_code == 200


def test_a_stranger_sharing_the_owners_address_cannot_keep_the_owner_out(app, auth):
    owner = owner_signed_in_before(app, auth)
    stranger_browser = app.test_client()
    statuses = [
        sign_in_from(
            stranger_browser, OWNER_ADDRESS, WRONG, email=f"someone{number}@example.com"
        ).status_code
        for number in range(20)
    ]
    assert statuses[-1] == 429  # the address's 20 a minute (the owner's first sign-in was one)
    assert sign_in_from(app.test_client(), OWNER_ADDRESS).status_code == 429

    assert sign_in_from(owner, OWNER_ADDRESS).status_code == 303


def test_a_new_browser_is_slowed_down_not_locked_out(app, auth):
    auth.create_user()
    under_attack(app)

    new_browser = app.test_client()
    paced = sign_in_from(new_browser, OWNER_ADDRESS)
    assert paced.status_code == 429
    assert PACED in page_text(paced)
    assert 'value="ada@example.com"' in page_text(paced)
    wait = int(paced.headers["Retry-After"])
    assert 1 <= wait <= 5
    time.sleep(wait)
    assert sign_in_from(new_browser, OWNER_ADDRESS).status_code == 303


def naming(user_id: int, cookie_value: str) -> str:
    """A device cookie rewritten to name another account, its signature left as it was."""
    payload, signature = cookie_value.split(".", 1)
    device = json.loads(base64_decode(payload)) | {"user": user_id}
    return base64_encode(json.dumps(device)).decode() + "." + signature


def test_a_tampered_or_another_accounts_device_cookie_gets_no_way_past(app, auth):
    owner = owner_signed_in_before(app, auth)
    graces_id = auth.create_user("grace@example.com")
    graces_browser = app.test_client()
    AuthActions(app, graces_browser).login("grace@example.com")
    AuthActions(app, graces_browser).logout()
    graces_cookie = graces_browser.get_cookie(DEVICE_COOKIE)
    assert graces_cookie is not None
    under_attack(app)

    tampered = app.test_client()
    with app.app_context():
        adas_id = db.session.scalar(select(User.id).where(User.email == "ada@example.com"))
    assert adas_id != graces_id
    tampered.set_cookie(DEVICE_COOKIE, naming(adas_id, graces_cookie.value))
    assert sign_in_from(tampered, OWNER_ADDRESS).status_code == 429
    assert sign_in_from(graces_browser, OWNER_ADDRESS).status_code == 429
    assert sign_in_from(tampered, stranger(1)).status_code == 429
    assert TOO_MANY in page_text(sign_in_from(graces_browser, stranger(2)))
    assert sign_in_from(owner, stranger(1)).status_code == 303


def test_the_owners_browser_still_gets_only_5_wrong_passwords_a_minute(app, auth):
    owner = owner_signed_in_before(app, auth)
    for _ in range(5):
        assert sign_in_from(owner, OWNER_ADDRESS, WRONG).status_code == 422
    assert TOO_MANY in page_text(sign_in_from(owner, OWNER_ADDRESS))
    assert sign_in_from(app.test_client(), OWNER_ADDRESS).status_code == 303


# Starting in production.


def production_app(monkeypatch, **settings: str) -> Flask:
    monkeypatch.setenv("ELYSIUM_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "a" * 64)
    monkeypatch.setenv("SITE_URL", "https://www.elysium.example")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})


def test_production_refuses_to_start_without_a_shared_limit_store(monkeypatch):
    with pytest.raises(ConfigurationError, match="REDIS_URL is not set") as refused:
        production_app(monkeypatch)
    assert "SINGLE_PROCESS=1" in str(refused.value)


def test_production_starts_without_redis_when_it_runs_as_one_process(monkeypatch):
    assert production_app(monkeypatch, SINGLE_PROCESS="1").config["SINGLE_PROCESS"] is True


def production_settings(app: Flask, **settings: str) -> dict[str, str]:
    return {
        "ELYSIUM_ENV": "production",
        "SECRET_KEY": "b" * 64,
        "SITE_URL": "https://www.elysium.example",
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        **settings,
    }


def test_single_process_is_refused_under_gunicorn_with_three_workers(app):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108
        "PYTHONPATH": str(PROJECT_ROOT),
        "FLASK_SKIP_DOTENV": "1",
        **production_settings(app, SINGLE_PROCESS="1"),
    }
    command = [sys.executable, "-m", "gunicorn", "--workers", "3"]
    finished = subprocess.run(  # noqa: S603
        [*command, "--bind", f"127.0.0.1:{free_port()}", "wsgi:app"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode != 0
    assert "SINGLE_PROCESS=1 says one process serves the shop, but gunicorn runs 3" in (
        finished.stderr
    )


def test_single_process_starts_under_gunicorn_with_one_worker(app):
    with ShopProcess(production_settings(app, SINGLE_PROCESS="1"), workers=1) as shop:
        assert requests.get(f"{shop.base_url}/healthz", timeout=5).ok


def test_production_with_redis_starts_with_three_workers(app):
    settings = production_settings(app, REDIS_URL="redis://127.0.0.1:6379/0")
    with ShopProcess(settings, workers=3) as shop:
        assert requests.get(f"{shop.base_url}/healthz", timeout=5).ok


# Several workers, one Redis.


@pytest.fixture(scope="module")
def redis_prefix() -> Iterator[str]:
    """A key prefix for this run only; its keys are removed afterwards."""
    require_redis()
    prefix = f"elysium-test-{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis(*REDIS)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def shop_settings(app: Flask, prefix: str, redis_url: str) -> dict[str, str]:
    return {
        "ELYSIUM_ENV": "testing",
        "SECRET_KEY": str(app.config["SECRET_KEY"]),
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "PROXY_FIX_HOPS": "1",  # each test's clients come from their own X-Forwarded-For
        **{name: str(value) for name, value in CHEAP_PASSWORD_HASHING.items()},
    }


@pytest.fixture(scope="module")
def three_workers(app: Flask, redis_prefix: str) -> Iterator[ShopProcess]:
    settings = shop_settings(app, redis_prefix, "redis://127.0.0.1:6379/0")
    with ShopProcess(settings, workers=3) as shop:
        yield shop


def browsers(shop: ShopProcess, path: str, address: str, count: int) -> list[tuple]:
    """``count`` browsers at ``address``, each with the form at ``path`` open (its token)."""
    ready = []
    for _ in range(count):
        browser = requests.Session()
        browser.headers["X-Forwarded-For"] = address
        ready.append((browser, csrf_token(browser.get(shop.base_url + path, timeout=10).text)))
    return ready


def post_at_once(shop: ShopProcess, path: str, forms: list[tuple]) -> Counter[int]:
    """Post every form at the same moment; how many answers of each status came back."""

    def post(form: tuple) -> int:
        browser, data = form
        return browser.post(
            shop.base_url + path, data=data, allow_redirects=False, timeout=30
        ).status_code

    with ThreadPoolExecutor(max_workers=len(forms)) as pool:
        return Counter(pool.map(post, forms))


def sign_in_forms(ready: list[tuple], emails: list[str], password: str) -> list[tuple]:
    return [
        (browser, {"csrf_token": token, "email": email, "password": password})
        for (browser, token), email in zip(ready, emails, strict=True)
    ]


def test_across_three_workers_an_address_gets_5_wrong_passwords_for_an_account(three_workers, auth):
    auth.create_user()
    ready = browsers(three_workers, "/auth/login", "198.51.100.1", 15)
    forms = sign_in_forms(ready, ["ada@example.com"] * 15, WRONG)
    assert post_at_once(three_workers, "/auth/login", forms) == {422: 5, 429: 10}

    [(browser, token)] = browsers(three_workers, "/auth/login", "198.51.100.2", 1)
    [form] = sign_in_forms([(browser, token)], ["ada@example.com"], PASSWORD)
    assert post_at_once(three_workers, "/auth/login", [form]) == {303: 1}


def test_across_three_workers_an_address_gets_20_sign_in_attempts_a_minute(three_workers):
    ready = browsers(three_workers, "/auth/login", "198.51.100.3", 30)
    emails = [f"visitor{number}@example.com" for number in range(30)]
    forms = sign_in_forms(ready, emails, WRONG)
    assert post_at_once(three_workers, "/auth/login", forms) == {422: 20, 429: 10}


def test_across_three_workers_an_address_gets_5_sign_ups_an_hour(three_workers, app):
    ready = browsers(three_workers, "/auth/register", "198.51.100.4", 12)
    forms = [
        (browser, {"csrf_token": token, "email": f"new{number}@example.com", "password": PASSWORD})
        for number, (browser, token) in enumerate(ready)
    ]
    assert post_at_once(three_workers, "/auth/register", forms) == {303: 5, 429: 7}
    assert len(sent_emails(app)) == 5


def test_across_three_workers_an_email_address_gets_3_reset_emails_an_hour(
    three_workers, app, auth
):
    auth.create_user()
    ready = [
        browser
        for number in range(10)
        for browser in browsers(three_workers, "/auth/forgot", f"198.51.100.{20 + number}", 1)
    ]
    forms = [
        (browser, {"csrf_token": token, "email": "ada@example.com"}) for browser, token in ready
    ]
    assert post_at_once(three_workers, "/auth/forgot", forms) == {303: 3, 429: 7}
    assert len(sent_emails(app, "ada@example.com")) == 3


# Redis failing under a running shop.


@pytest.fixture
def shop_behind_proxy(app: Flask, redis_prefix: str, tmp_path: Path) -> Iterator[tuple]:
    """One gunicorn worker whose Redis is reached through a proxy the test can break; what
    the worker logs goes to a file."""
    log = tmp_path / "shop.log"
    with TcpProxy(REDIS) as proxy:
        settings = shop_settings(app, redis_prefix, f"redis://127.0.0.1:{proxy.port}/0")
        settings["GUNICORN_CMD_ARGS"] = f"--capture-output --error-logfile {log}"
        with ShopProcess(settings, workers=1) as shop:
            yield shop, proxy, log


def sign_in_over_http(shop: ShopProcess, address: str, password: str) -> requests.Response:
    [(browser, token)] = browsers(shop, "/auth/login", address, 1)
    return browser.post(
        f"{shop.base_url}/auth/login",
        data={"csrf_token": token, "email": "ada@example.com", "password": password},
        allow_redirects=False,
        timeout=30,
    )


def test_when_redis_goes_down_sign_in_works_and_each_worker_limits_on_its_own(
    shop_behind_proxy, auth
):
    shop, proxy, log = shop_behind_proxy
    auth.create_user()
    assert sign_in_over_http(shop, "198.51.100.40", WRONG).status_code == 422

    proxy.cut()
    assert sign_in_over_http(shop, "198.51.100.41", PASSWORD).status_code == 303
    statuses = [sign_in_over_http(shop, "198.51.100.42", WRONG).status_code for _ in range(6)]
    assert statuses == [422] * 5 + [429]
    assert "falling back to in-memory storage" in log.read_text()


def test_when_redis_hangs_sign_in_still_answers_promptly(shop_behind_proxy, auth):
    """A request waits for Redis at most twice (its own count, then Flask-Limiter's health
    check), REDIS_TIMEOUT_SECONDS each; the next ones count in memory at once."""
    shop, proxy, _ = shop_behind_proxy
    auth.create_user()
    proxy.hang()
    for password in (WRONG, WRONG, PASSWORD):
        [(browser, token)] = browsers(shop, "/auth/login", "198.51.100.50", 1)
        started = time.monotonic()
        response = browser.post(
            f"{shop.base_url}/auth/login",
            data={"csrf_token": token, "email": "ada@example.com", "password": password},
            allow_redirects=False,
            timeout=30,
        )
        assert time.monotonic() - started < 2 * REDIS_TIMEOUT_SECONDS + 0.5
        assert response.status_code == (303 if password == PASSWORD else 422)


def test_when_redis_hangs_the_shop_window_waits_for_it_once(shop_behind_proxy, catalogue):
    """A Redis that hangs cost every kept block of every page its timeout (a product page
    has five): seconds a page, for the whole outage. The first request that meets it waits;
    the process then leaves the cache alone for a while, and the next pages answer at once."""
    shop, proxy, log = shop_behind_proxy
    proxy.hang()
    took = []
    for _ in range(3):
        started = time.monotonic()
        response = requests.get(
            f"{shop.base_url}/shop/aurelia-solitaire-ring",
            headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"},
            timeout=30,
        )
        took.append(time.monotonic() - started)
        assert response.status_code == 200
        assert "Aurelia Solitaire Ring" in response.text

    assert took[0] < 4 * REDIS_TIMEOUT_SECONDS + 0.5
    assert max(took[1:]) < REDIS_TIMEOUT_SECONDS, took
    assert "The cache could not be read" in log.read_text()


def test_password_resets_from_one_address_are_limited_to_20_an_hour(client, auth):
    """Three an hour per account kept each owner from being flooded, but a script could mail
    every account it knew of, three times an hour each. What was typed stays in the form."""
    for n in range(20):
        sent = client.submit("/auth/forgot", {"email": f"someone{n}@example.com"})
        assert sent.status_code == 303, n
    limited = client.submit("/auth/forgot", {"email": "one-more@example.com"})
    assert limited.status_code == 429
    assert "Please try again in" in page_text(limited)
    form = Page(limited).one('form[action="/auth/forgot"]')
    assert form.select_one('input[name="email"]')["value"] == "one-more@example.com"
    elsewhere = client.post(
        "/auth/forgot",
        data={"csrf_token": client.csrf_token, "email": "one-more@example.com"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    assert elsewhere.status_code == 303
