"""Two servers of one shop behind a load balancer: two gunicorn instances on different ports,
sharing one PostgreSQL database and one Redis, as ``SITE_URL`` and ``TRUSTED_HOSTS`` expect.

A shopper's browser (one ``requests.Session``: cookies belong to the host, 127.0.0.1, not to
the port) may reach either server on any request, and nothing may depend on which: who is
signed in, the bag, signing out (even for a copied cookie), the rate limits. Beside them, the
email worker and the stale-checkout sweeper run on two "hosts" at once and act once.

PostgreSQL only (the shop's servers share it; SQLite is one file for one host). The Redis on
127.0.0.1:6379 is used under a key prefix of this run's own, removed afterwards; without Redis
the module is skipped, unless ``REQUIRE_REDIS`` is set (as in CI), which makes it fail.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import requests
from flask import Flask
from sqlalchemy import func, select, text, update

from devtools.fake_stripe import FakeStripeServer
from elysium.extensions import db
from elysium.models import Order, OrderEvent, OrderStatus, OutboxEmail, OutboxStatus
from elysium.models.inventory import StockMovement, StockMovementKind
from elysium.models.types import utcnow
from elysium.services.outbox import idempotency_key
from tests.conftest import CHEAP_PASSWORD_HASHING, PASSWORD, WEBHOOK_SECRET, create_user
from tests.html import Page, bag_count, csrf_token, text_of
from tests.support.checkout import CHAIN, DETAILS, KEY, METAL, bags, set_stock, stock
from tests.support.local_redis import REDIS, require_redis
from tests.support.meanwhile import waiting_for_a_lock
from tests.support.resend_server import FakeResend, running_fake_resend
from tests.support.shop_process import PROJECT_ROOT, ShopProcess

pytestmark = pytest.mark.postgres_only

WRONG = "not the password at all"


@dataclass
class Servers:
    a: ShopProcess
    b: ShopProcess
    fake_stripe: FakeStripeServer

    @property
    def both(self) -> tuple[ShopProcess, ShopProcess]:
        return self.a, self.b


@pytest.fixture(scope="module")
def servers(app: Flask) -> Iterator[Servers]:
    """Servers A and B: one database, one Redis prefix (this run's), one ``SITE_URL`` (A's,
    standing for the shop's address), one fake Stripe whose own events never arrive."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("several servers share one PostgreSQL database; SQLite serves one host")
    require_redis()
    prefix = f"elysium-test-{uuid.uuid4().hex}"
    with FakeStripeServer(webhook_secret=WEBHOOK_SECRET, auto_deliver=False) as fake_stripe:
        settings = {
            "ELYSIUM_ENV": "testing",
            "SECRET_KEY": str(app.config["SECRET_KEY"]),
            "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "REDIS_KEY_PREFIX": prefix,
            "PROXY_FIX_HOPS": "1",  # each test's browsers come from their own X-Forwarded-For
            "STRIPE_SECRET_KEY": KEY,
            "STRIPE_API_BASE": fake_stripe.base_url,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "EMAIL_BACKEND": "console",
            **{name: str(value) for name, value in CHEAP_PASSWORD_HASHING.items()},
        }
        a = ShopProcess(settings)
        b = ShopProcess({**settings, "SITE_URL": a.base_url})
        with a, b:
            yield Servers(a, b, fake_stripe)
    store = redis.Redis(*REDIS)
    keys = list(store.scan_iter(match=f"{prefix}:*"))
    if keys:
        store.delete(*keys)
    store.close()


def browser(address: str) -> requests.Session:
    """A browser at ``address`` (its X-Forwarded-For, as the load balancer would say)."""
    session = requests.Session()
    session.headers["X-Forwarded-For"] = address
    return session


def submit(
    browser: requests.Session, server: ShopProcess, page: str, data: dict, action: str | None = None
) -> requests.Response:
    """Open ``page`` on ``server`` and post its form, with the page's CSRF token, to ``action``."""
    opened = browser.get(server.base_url + page, timeout=30)
    assert opened.status_code == 200, opened.status_code
    return browser.post(
        server.base_url + (action or page),
        data={"csrf_token": csrf_token(opened.text), **data},
        allow_redirects=False,
        timeout=30,
    )


def sign_in(browser: requests.Session, server: ShopProcess, **form: str) -> requests.Response:
    return submit(
        browser, server, "/auth/login", {"email": "ada@example.com", "password": PASSWORD, **form}
    )


def account_page(browser: requests.Session, server: ShopProcess) -> requests.Response:
    return browser.get(f"{server.base_url}/account", allow_redirects=False, timeout=30)


def signed_in_as(browser: requests.Session, server: ShopProcess) -> str | None:
    """Whose account page ``server`` shows this browser (``None``: it is sent to sign in)."""
    page = account_page(browser, server)
    if page.status_code == 303:
        assert "/auth/login" in page.headers["Location"]
        return None
    assert page.status_code == 200, page.status_code
    return text_of(Page(page.text), "h1")


def a_user(app: Flask) -> None:
    with app.app_context():
        create_user()
        db.session.remove()


def test_signed_in_on_one_server_is_signed_in_on_the_other(servers, app):
    a_user(app)
    shopper = browser("192.0.2.10")
    assert signed_in_as(shopper, servers.b) is None

    assert sign_in(shopper, servers.a).status_code == 303

    assert signed_in_as(shopper, servers.a) == "Ada Lovelace"
    assert signed_in_as(shopper, servers.b) == "Ada Lovelace"
    # A form opened on one server is accepted by the other (one CSRF secret, one session).
    opened = shopper.get(f"{servers.a.base_url}/account", timeout=30)
    assert opened.status_code == 200
    sent_to_b = shopper.post(
        f"{servers.b.base_url}/auth/logout",
        data={"csrf_token": csrf_token(opened.text)},
        allow_redirects=False,
        timeout=30,
    )
    assert sent_to_b.status_code == 303
    assert signed_in_as(shopper, servers.a) is None


def test_the_bag_is_the_same_on_both_servers(servers, app, catalogue):
    a_user(app)
    shopper = browser("192.0.2.20")
    piece = {"product": CHAIN, "quantity": "1", "metal": METAL}

    assert submit(shopper, servers.a, f"/shop/{CHAIN}", piece, "/cart/items").status_code == 303
    for server in servers.both:
        assert bag_count(shopper.get(f"{server.base_url}/cart", timeout=30).text) == 1

    assert submit(shopper, servers.b, f"/shop/{CHAIN}", piece, "/cart/items").status_code == 303
    assert sign_in(shopper, servers.a).status_code == 303  # the guest's bag joins the account's
    for server in servers.both:
        bag = Page(shopper.get(f"{server.base_url}/cart", timeout=30).text)
        assert bag_count(bag) == 2
        assert "Aurelia Fine Chain" in text_of(bag, "main")


def test_signing_out_on_one_server_ends_the_session_on_the_other_even_for_a_copied_cookie(
    servers, app
):
    a_user(app)
    shopper = browser("192.0.2.30")
    assert sign_in(shopper, servers.a, remember="y").status_code == 303
    assert {"session", "remember_token"} <= set(shopper.cookies.keys())
    copied = requests.utils.dict_from_cookiejar(shopper.cookies)
    thief = browser("203.0.113.30")
    thief.cookies.update(copied)
    assert signed_in_as(thief, servers.b) == "Ada Lovelace"  # the copy works while signed in

    signed_out = submit(shopper, servers.a, "/account", {}, "/auth/logout")
    assert signed_out.status_code == 303

    assert signed_in_as(shopper, servers.b) is None
    for server in servers.both:
        replayed = browser("203.0.113.31")
        replayed.cookies.update(copied)
        assert signed_in_as(replayed, server) is None
        # The remember cookie alone does not sign anyone back in either.
        remembered = browser("203.0.113.32")
        remembered.cookies.set("remember_token", copied["remember_token"])
        assert signed_in_as(remembered, server) is None


def wrong_passwords(app_servers: list[ShopProcess], address: str) -> list[int]:
    """One wrong password for Ada per server in the list, each from a fresh browser at
    ``address`` (not a device Ada ever used); the statuses, in order."""
    return [
        submit(
            browser(address),
            server,
            "/auth/login",
            {"email": "ada@example.com", "password": WRONG},
        ).status_code
        for server in app_servers
    ]


def test_a_rate_limit_counts_the_attempts_on_both_servers_together(servers, app):
    a_user(app)
    on_one_server = wrong_passwords([servers.a] * 8, "198.51.100.60")
    split_across_both = wrong_passwords([servers.a, servers.b] * 4, "198.51.100.61")

    assert on_one_server == split_across_both == [422] * 5 + [429] * 3
    refused = sign_in(browser("198.51.100.61"), servers.b)  # the right password, too soon
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert sign_in(browser("198.51.100.62"), servers.b).status_code == 303  # anyone else is in


def flask_command(app: Flask, tmp_path: Path, *args: str, **settings: str) -> subprocess.Popen[str]:
    """``flask <args>`` in a process of its own (another host), on the test database."""
    env = {
        **os.environ,
        "FLASK_APP": "wsgi",
        "ELYSIUM_ENV": "testing",
        "ELYSIUM_INSTANCE_PATH": str(tmp_path),
        "SECRET_KEY": str(app.config["SECRET_KEY"]),
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "PYTHONUNBUFFERED": "1",
        **settings,
    }
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "flask", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until(condition: Callable[[], bool], what: str, *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}")
        time.sleep(0.05)


def started_together(
    app: Flask, lock: str, start: Callable[[], subprocess.Popen[str]]
) -> list[subprocess.Popen[str]]:
    """Two processes from ``start``, let go at the same moment: the test holds ``lock`` (an SQL
    statement that locks what both need first) until both wait for it."""
    with app.app_context():
        engine = db.engine
    with engine.connect() as gate:
        gate.execute(text(lock))
        processes = [start(), start()]
        try:
            wait_until(
                lambda: (
                    waiting_for_a_lock(app) == 2
                    or any(process.poll() is not None for process in processes)
                ),
                "both processes to wait for the lock",
            )
        except BaseException:
            gate.rollback()  # first: a worker waiting for the lock finishes its pass, then stops
            outputs_of(processes, stop=True)
            raise
        gate.rollback()
    return processes


def outputs_of(processes: list[subprocess.Popen[str]], *, stop: bool = False) -> list[str]:
    """What each process printed, once it has ended (asked to with SIGTERM, when ``stop``).
    A process still running a minute later is killed, and the test fails."""
    if stop:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
    try:
        return [process.communicate(timeout=60)[0] for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
            process.communicate()
        pytest.fail("a process did not end")


@pytest.fixture
def fake_resend() -> Iterator[FakeResend]:
    with running_fake_resend() as fake:
        yield fake


def outbox(app: Flask) -> list[OutboxEmail]:
    with app.app_context():
        emails = list(db.session.scalars(select(OutboxEmail).order_by(OutboxEmail.id)))
        db.session.expunge_all()
        db.session.remove()
        return emails


def test_two_email_workers_on_two_hosts_send_each_email_once(servers, app, fake_resend, tmp_path):
    for number in range(16):  # sign-ups on both servers, each queueing its email
        form = {"email": f"shopper{number}@example.com", "password": PASSWORD}
        address = f"198.51.100.{100 + number}"
        signed_up = submit(browser(address), servers.both[number % 2], "/auth/register", form)
        assert signed_up.status_code == 303
    fake_resend.succeed(delay_seconds=0.1)  # a sender is busy a while with each email
    resend = {
        "EMAIL_BACKEND": "resend",
        "RESEND_BASE_URL": fake_resend.url,
        "RESEND_API_KEY": fake_resend.api_key,
    }

    # Both workers start on the full outbox at the same moment.
    workers = started_together(
        app,
        "LOCK TABLE outbox_emails IN EXCLUSIVE MODE",
        lambda: flask_command(app, tmp_path, "emails", "worker", "--interval", "0.1", **resend),
    )
    try:
        wait_until(
            lambda: [email.status for email in outbox(app)] == [OutboxStatus.SENT] * 16,
            "every email to be sent",
        )
    finally:
        outputs = outputs_of(workers, stop=True)

    assert [worker.returncode for worker in workers] == [0, 0], outputs
    emails = outbox(app)
    assert sorted(fake_resend.keys()) == sorted(
        idempotency_key(email.id, email.created_at) for email in emails
    )
    assert len(fake_resend.requests) == fake_resend.emails_sent == 16
    hosts = {f"{socket.gethostname()}:{worker.pid}" for worker in workers}
    assert {email.claimed_by for email in emails} == hosts  # both took their share


def check_out(server: ShopProcess, address: str) -> None:
    """A guest puts the chain in the bag and goes to pay on Stripe's page, and no further."""
    guest = browser(address)
    piece = {"product": CHAIN, "quantity": "1", "metal": METAL}
    assert submit(guest, server, f"/shop/{CHAIN}", piece, "/cart/items").status_code == 303
    to_stripe = submit(guest, server, "/checkout", DETAILS)
    assert to_stripe.status_code == 303
    assert "/pay/cs_test_" in to_stripe.headers["Location"]


def outcomes(output: str) -> Counter[str]:
    """``Stale checkouts: 2 cancelled, 2 skipped.`` as a count per outcome."""
    summary = re.search(r"Stale checkouts: (.*)\.", output)
    assert summary, output
    return Counter(
        {outcome: int(count) for count, outcome in re.findall(r"(\d+) (\w+)", summary.group(1))}
    )


def test_two_sweepers_at_once_settle_each_stale_checkout_once(servers, app, catalogue, tmp_path):
    set_stock(app, 10)
    for number in range(4):
        check_out(servers.both[number % 2], f"192.0.2.{60 + number}")
    with app.app_context():
        db.session.execute(
            update(Order).values(checkout_expires_at=utcnow() - timedelta(minutes=30))
        )
        db.session.commit()
        db.session.remove()
    stripe = {
        "STRIPE_SECRET_KEY": KEY,
        "STRIPE_API_BASE": servers.fake_stripe.base_url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SITE_URL": servers.a.base_url,
    }

    # Both sweepers list the same four orders and reach the first one's lock before either
    # may settle anything.
    sweepers = started_together(
        app,
        "SELECT id FROM orders FOR UPDATE",
        lambda: flask_command(app, tmp_path, "orders", "expire-stale", **stripe),
    )
    outputs = outputs_of(sweepers)

    assert [sweeper.returncode for sweeper in sweepers] == [0, 0], outputs
    assert sum((outcomes(output) for output in outputs), Counter()) == {
        "cancelled": 4,
        "skipped": 4,
    }
    with app.app_context():
        statuses = db.session.scalars(select(Order.status)).all()
        cancellations = db.session.execute(
            select(OrderEvent.order_id, func.count())
            .where(OrderEvent.to_status == OrderStatus.CANCELLED)
            .group_by(OrderEvent.order_id)
        ).all()
        ledger = db.session.execute(
            select(
                StockMovement.kind, func.count(), func.sum(StockMovement.reserved_delta)
            ).group_by(StockMovement.kind)
        ).all()
        sessions = db.session.scalars(select(Order.stripe_checkout_session_id)).all()
        db.session.remove()
    assert statuses == [OrderStatus.CANCELLED] * 4
    assert sorted(count for _, count in cancellations) == [1] * 4
    assert sorted(ledger) == sorted(
        [(StockMovementKind.RESERVE, 4, 4), (StockMovementKind.RELEASE, 4, -4)]
    )
    assert stock(app) == (10, 0)
    assert bags(app) == [(False, [1])] * 4
    assert {servers.fake_stripe.session(s)["status"] for s in sessions} == {"expired"}
