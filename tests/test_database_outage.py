"""The database goes away under the shop and comes back.

While PostgreSQL is down every page answers at once with the shop's own "back in a moment"
page (503, ``Retry-After``; the fragment for htmx), never a hang, a traceback or the server's
bare error; once it is back the same gunicorn workers serve again by themselves, and no
order, bag or stock row was left half-written.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import create_engine, text

from devtools.fake_stripe import FakeStripeServer
from elysium.config import normalise_database_url
from elysium.extensions import db
from elysium.services.seeding import load_demo_catalogue, seed_catalogue
from tests.conftest import WEBHOOK_SECRET, make_app
from tests.html import Page, csrf_token, text_of
from tests.support.checkout import DETAILS, KEY, session_id_from
from tests.support.pg_cluster import PostgresCluster, throwaway_cluster
from tests.support.shop_process import ShopProcess, free_port

UNAVAILABLE = "We'll be back in a moment"
# Pieces with stock and no ring size: (slug, metal). Each guest adds one and half check out.
PIECES = [
    ("aurelia-fine-chain", "yellow-gold"),
    ("aurelia-hoop-earrings", "yellow-gold"),
    ("meridian-bar-pendant", "white-gold"),
    ("meridian-facet-studs", "rose-gold"),
    ("ondine-lariat-necklace", "yellow-gold"),
]
SHOPPERS = 4
# Far more than "at once", far less than a hung request (gunicorn gives up after 120 s): the
# box running the suite has two cores shared with everything else. NO_HANG bounds every request
# that was in flight or made while the database was down; SLOW, every request of the test.
NO_HANG = 2.0
SLOW = 10.0


def unreachable_database(app: Flask, tmp_path: Path) -> str:
    """A database of the suite's kind that can't be opened: nothing listens on the port, or
    the SQLite file's directory does not exist."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/elysium"
    return f"sqlite:///{tmp_path / 'missing' / 'elysium.sqlite3'}"


def assert_unavailable_page(response) -> None:
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert "no-store" in response.headers["Cache-Control"]
    page = Page(response)
    assert text_of(page, "title").endswith("ELYSIUM")
    assert text_of(page, ".error-page h1") == UNAVAILABLE


def test_an_unreachable_database_gets_the_shops_503_page(app: Flask, tmp_path: Path):
    shop = make_app(unreachable_database(app, tmp_path))
    client = shop.test_client()

    assert_unavailable_page(client.get("/shop"))
    assert_unavailable_page(client.get("/shop/aurelia-fine-chain"))
    assert client.get("/healthz").status_code == 503

    added = client.htmx(  # type: ignore[attr-defined]
        "POST", "/cart/items", data={"product": "aurelia-fine-chain", "quantity": "1"}
    )
    assert added.status_code == 503
    assert added.headers["HX-Retarget"] == "#messages"
    assert added.headers["Retry-After"].isdigit()
    assert UNAVAILABLE in text_of(Page(added), "[role=alert]")
    assert not Page(added).select("html, body, header")

    with client.session_transaction() as session:
        session["_user_id"] = "1:1"  # a signed-in shopper, whose account can't be read either
    assert_unavailable_page(client.get("/shop"))


@dataclass
class Answer:
    """One request a shopper made: when, what, and what came back."""

    began: float
    took: float
    method: str
    path: str
    htmx: bool
    status: int | None  # None: no answer at all (refused, reset, timed out)
    problem: str = ""  # why the answer is not one a shopper should ever get


@dataclass
class Shopper:
    """A guest's browser and what the shop told them."""

    browser: requests.Session
    piece: tuple[str, str]
    added: bool = False
    checkout_session: str | None = None


@dataclass
class Load:
    base_url: str
    fake: FakeStripeServer
    answers: list[Answer] = field(default_factory=list)
    shoppers: list[Shopper] = field(default_factory=list)
    payments: list[tuple[float, float, list]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def request(self, shopper: Shopper, method: str, path: str, **kwargs) -> requests.Response:
        htmx = kwargs.get("headers", {}).get("HX-Request") == "true"
        began = time.monotonic()
        try:
            response = shopper.browser.request(
                method, self.base_url + path, allow_redirects=False, timeout=30, **kwargs
            )
        except requests.RequestException as error:
            self.record(
                Answer(began, time.monotonic() - began, method, path, htmx, None, repr(error))
            )
            raise
        answer = Answer(began, time.monotonic() - began, method, path, htmx, response.status_code)
        if response.status_code == 503:
            answer.problem = unavailable_problem(response, htmx)
        elif response.status_code not in (200, 303):
            answer.problem = f"unexpected {response.status_code}: {response.text[:300]}"
        self.record(answer)
        return response

    def record(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    def shop(self, number: int) -> None:
        """Guests one after another: browse, open a piece, add it to the bag (by htmx for
        every other guest), and every other guest checks out and pays."""
        guest = number
        while not self.stop.is_set():
            shopper = Shopper(requests.Session(), PIECES[guest % len(PIECES)])
            with self.lock:
                self.shoppers.append(shopper)
            try:
                self.visit(shopper, htmx=guest % 2 == 0, checkout=guest % 4 < 2)
            except requests.RequestException:
                time.sleep(0.05)
            guest += SHOPPERS

    def visit(self, shopper: Shopper, *, htmx: bool, checkout: bool) -> None:
        slug, metal = shopper.piece
        listing_headers = {"HX-Request": "true"} if htmx else {}
        if self.request(shopper, "GET", "/shop", headers=listing_headers).status_code != 200:
            return
        page = self.request(shopper, "GET", f"/shop/{slug}")
        if page.status_code != 200:
            return
        token = csrf_token(page.text)
        choice = {"product": slug, "metal": metal, "quantity": "1"}
        if htmx:
            headers = {"HX-Request": "true", "X-CSRFToken": str(token)}
            added = self.request(shopper, "POST", "/cart/items", data=choice, headers=headers)
        else:
            added = self.request(
                shopper, "POST", "/cart/items", data={"csrf_token": token, **choice}
            )
        if added.status_code not in (200, 303):
            return
        shopper.added = True
        if not checkout:
            return
        form = self.request(shopper, "GET", "/checkout")
        if form.status_code != 200:
            return
        to_stripe = self.request(
            shopper, "POST", "/checkout", data={"csrf_token": csrf_token(form.text), **DETAILS}
        )
        if to_stripe.status_code != 303:
            return
        shopper.checkout_session = session_id_from(to_stripe.headers["Location"])
        began = time.monotonic()
        deliveries = self.fake.pay(shopper.checkout_session)  # Stripe tells the shop, now
        with self.lock:
            self.payments.append((began, time.monotonic() - began, deliveries))


def unavailable_problem(response: requests.Response, htmx: bool) -> str:
    """What is wrong with a 503, if it is not the shop's own page (or fragment for htmx)."""
    if not response.headers.get("Retry-After", "").isdigit():
        return "503 without Retry-After"
    page = Page(response.text)
    if htmx:
        if response.headers.get("HX-Retarget") != "#messages" or page.select("html, body"):
            return f"503 for htmx is not the messages fragment: {response.text[:300]}"
        alerts = page.select("[role=alert]")
        if not alerts or UNAVAILABLE not in alerts[0].get_text():
            return f"503 fragment without the shop's message: {response.text[:300]}"
        return ""
    headings = page.select(".error-page h1")
    titles = page.select("title")
    if not headings or headings[0].get_text().strip() != UNAVAILABLE:
        return f"503 is not the shop's page: {response.text[:300]}"
    if not titles or not titles[0].get_text().strip().endswith("ELYSIUM"):
        return f"503 page without the shop's title: {response.text[:300]}"
    return ""


def worker_ids(master: int) -> set[int]:
    """The gunicorn master's child processes (its workers), from /proc."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == master:
            children.add(int(stat.parent.name))
    return children


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with throwaway_cluster() as started:
        yield started


def migrated_and_seeded(cluster: PostgresCluster) -> str:
    """The shop's schema and demo catalogue in a new database of the cluster, with stock to
    spare (no guest is ever turned away for lack of it); its URL."""
    url = normalise_database_url(cluster.create_database("elysium"))
    shop = make_app(url)
    with shop.app_context():
        upgrade()
        seed_catalogue(db.session, load_demo_catalogue())
        db.session.execute(text("UPDATE inventory SET stock_level = 1000"))
        db.session.commit()
        db.session.remove()
    return url


def stock_counts(url: str) -> dict[int, tuple[int, int]]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, stock_level, reserved FROM inventory"))
        counts = {row.id: (row.stock_level, row.reserved) for row in rows}
    engine.dispose()
    return counts


def test_the_shop_rides_out_a_database_outage_under_load(cluster: PostgresCluster):
    url = migrated_and_seeded(cluster)
    before = stock_counts(url)
    names = {product["slug"]: product["name"] for product in load_demo_catalogue()["products"]}
    settings = {
        "ELYSIUM_ENV": "testing",
        "SECRET_KEY": "test-secret-key-not-for-production",
        "DATABASE_URL": url,
        "STRIPE_SECRET_KEY": KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "EMAIL_BACKEND": "console",
    }
    with (
        FakeStripeServer(webhook_secret=WEBHOOK_SECRET) as fake,
        ShopProcess(settings | {"STRIPE_API_BASE": fake.base_url}, workers=2) as shop,
    ):
        fake.webhook_url = f"{shop.base_url}/webhooks/stripe"
        assert shop.process is not None
        workers = worker_ids(shop.process.pid)
        assert len(workers) == 2
        load = Load(shop.base_url, fake)
        threads = [threading.Thread(target=load.shop, args=(n,)) for n in range(SHOPPERS)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(3)
            stopping = time.monotonic()
            cluster.stop("immediate")  # as if the server had crashed
            down = time.monotonic()
            time.sleep(3)
            restarting = time.monotonic()
            cluster.start()  # crash recovery from the WAL
            up = time.monotonic()
            recovered = None
            probe = Shopper(requests.Session(), PIECES[0])
            while recovered is None and time.monotonic() - up < 10:
                if load.request(probe, "GET", "/shop").status_code == 200:
                    recovered = time.monotonic()
                time.sleep(0.05)
            time.sleep(3)
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(timeout=60)

        assert recovered is not None, "the shop did not serve again after the database came back"
        assert recovered - up < 5
        # Stripe tries again what was not acknowledged; once is enough now.
        retried = [
            fake.deliver(delivery.event_id)
            for _, _, deliveries in load.payments
            for delivery in deliveries
            if delivery.status != 200
        ]
        assert all(delivery.status == 200 for delivery in retried), retried
        assert shop.process.poll() is None
        assert worker_ids(shop.process.pid) == workers, "gunicorn had to replace a worker"

        answers = load.answers
        statuses = Counter(answer.status for answer in answers)
        problems = [answer for answer in answers if answer.problem]
        logged = [shop.logged_about(ref) for ref in re.findall(r"Reference (\w+)", str(problems))]
        assert not problems, (problems[:5], logged[:2])
        assert statuses[200] + statuses[303] + statuses[503] == len(answers), statuses
        slowest = max(answer.took for answer in answers)
        assert slowest < SLOW, f"slowest answer {slowest:.3f} s"
        outage = [a for a in answers if down <= a.began and a.began + a.took <= restarting]
        assert len(outage) >= 10, f"too few requests during the outage: {len(outage)}"
        assert {answer.status for answer in outage} == {503}
        touched = [a for a in answers if a.began < up and a.began + a.took > stopping]
        slowest_in_outage = max(answer.took for answer in touched)
        assert slowest_in_outage < NO_HANG, f"slowest answer {slowest_in_outage:.3f} s"
        settled = [a for a in answers if a.began > recovered]
        assert settled
        assert {answer.status for answer in settled} <= {200, 303}
        print(
            f"\n{len(answers)} requests {dict(statuses)}; {len(outage)} in the outage, the slowest"
            f" {max(answer.took for answer in outage) * 1000:.0f} ms; the slowest of the"
            f" {len(touched)} it touched {slowest_in_outage * 1000:.0f} ms;"
            f" slowest overall {slowest * 1000:.0f} ms;"
            f" serving again {(recovered - up) * 1000:.0f} ms after PostgreSQL was back"
            f" ({(up - restarting) * 1000:.0f} ms to start);"
            f" {len(load.payments)} payments, {len(retried)} webhooks retried"
        )

        # What each guest was told holds: the bag still has the piece, the payment is an order.
        for shopper in load.shoppers:
            if shopper.added and shopper.checkout_session is None:
                bag = shopper.browser.get(f"{shop.base_url}/cart", timeout=30)
                assert bag.status_code == 200
                assert names[shopper.piece[0]] in text_of(Page(bag.text), "main")
        paid_sessions = {s.checkout_session for s in load.shoppers if s.checkout_session}
        assert paid_sessions

    assert_consistent(url, before, paid_sessions)


def assert_consistent(url: str, before: dict[int, tuple[int, int]], paid: set[str]) -> None:
    """The invariants the schema and the inventory service promise, checked in SQL."""
    engine = create_engine(url)
    with engine.connect() as connection:

        def rows(sql: str) -> list:
            return list(connection.execute(text(sql)))

        assert not rows("SELECT id FROM cart_lines WHERE cart_id NOT IN (SELECT id FROM carts)")
        assert not rows(
            "SELECT id FROM inventory WHERE stock_level < 0 OR reserved < 0"
            " OR reserved > stock_level"
        )
        # Every count is where the ledger says: what it was, plus every movement since.
        moved = {
            row.inventory_id: (row.stock, row.reserved)
            for row in rows(
                "SELECT inventory_id, SUM(stock_delta) AS stock, SUM(reserved_delta) AS reserved"
                " FROM stock_movements GROUP BY inventory_id"
            )
        }
        now = stock_counts(url)
        for inventory_id, (stock, reserved) in now.items():
            stock_moved, reserved_moved = moved.get(inventory_id, (0, 0))
            assert stock == before[inventory_id][0] + stock_moved, inventory_id
            assert reserved == before[inventory_id][1] + reserved_moved, inventory_id

        # Orders: whole (lines, totals), each reservation exactly its lines, settled as its
        # status says.
        assert not rows("SELECT id FROM orders WHERE id NOT IN (SELECT order_id FROM order_lines)")
        assert not rows(
            "SELECT o.id FROM orders o JOIN order_lines l ON l.order_id = o.id"
            " GROUP BY o.id, o.subtotal, o.shipping, o.total"
            " HAVING o.subtotal <> SUM(l.unit_price * l.quantity)"
            " OR o.total <> o.subtotal + o.shipping"
        )
        taken: dict[int, Counter[int]] = defaultdict(Counter)
        for row in rows(
            "SELECT order_id, inventory_id, quantity FROM order_lines"
            " WHERE inventory_id IS NOT NULL AND NOT made_to_order"
        ):
            taken[row.order_id][row.inventory_id] += row.quantity
        movements: dict[int, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
        for row in rows(
            "SELECT order_id, inventory_id, kind, reserved_delta FROM stock_movements"
            " WHERE order_id IS NOT NULL"
        ):
            movements[row.order_id][row.kind][row.inventory_id] = row.reserved_delta
        settles = {"pending": None, "paid": "commit", "cancelled": "release"}
        orders = rows("SELECT id, status, cart_id, stripe_checkout_session_id FROM orders")
        assert orders
        for order in orders:
            kinds = movements[order.id]
            assert kinds["reserve"] == dict(taken[order.id]), order
            assert order.status in settles, order
            if (settle := settles[order.status]) is None:
                assert set(kinds) == {"reserve"}, order
            else:
                assert set(kinds) == {"reserve", settle}, order
                negated = {key: -value for key, value in kinds[settle].items()}
                assert negated == kinds["reserve"], order
        by_session = {order.stripe_checkout_session_id: order.status for order in orders}
        assert all(by_session[session] == "paid" for session in paid), by_session

        # A bag is frozen exactly while one unpaid order waits on it.
        assert not rows(
            "SELECT c.id FROM carts c WHERE (c.frozen_at IS NOT NULL) <> EXISTS("
            "SELECT 1 FROM orders o WHERE o.cart_id = c.id AND o.status = 'pending')"
        )
        assert not rows(
            "SELECT cart_id FROM orders WHERE status = 'pending' AND cart_id IS NOT NULL"
            " GROUP BY cart_id HAVING COUNT(*) > 1"
        )
        assert not rows(
            "SELECT o.id FROM orders o JOIN cart_lines l ON l.cart_id = o.cart_id"
            " WHERE o.status = 'paid'"
        )
    engine.dispose()


def test_a_signed_in_shoppers_error_pages_are_drawn_while_the_database_is_down(
    app: Flask, tmp_path: Path
):
    """The error page's header reads the account: with the database down, a signed-in
    shopper's 404 or expired form was a 500 (found by review, from outside under gunicorn)."""
    shop = make_app(unreachable_database(app, tmp_path), PROPAGATE_EXCEPTIONS=False)
    client = shop.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = "1:1"

    missing = client.get("/no-such-page")
    assert missing.status_code == 404
    assert "no-store" in missing.headers["Cache-Control"]
    assert text_of(Page(missing), "title").endswith("ELYSIUM")

    assert client.get("/art/no-such-piece/yellow-gold/none.svg").status_code == 404

    expired = client.post("/cart/items", data={"csrf_token": "stale", "product": "x"})
    assert expired.status_code == 400
    assert "expired" in text_of(Page(expired), ".error-page")
