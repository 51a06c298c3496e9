"""Soak the shop: a mixed workload for a chosen time, then check that nothing leaked or broke.

    .venv/bin/python bench/soak.py --minutes 5 --shoppers 8
    .venv/bin/python bench/soak.py --minutes 30 --shoppers 8 --report soak.md

The shop runs under gunicorn in production mode on a fresh PostgreSQL database (named in
``SOAK_DATABASE_URL``; dropped and made again), with Redis and the fake Stripe from
``devtools/`` (its webhooks go to the shop). Each simulated shopper loops: the home page, the
listing (plain and filtered), a product page and its price fragment, adding a piece to the
bag, changing a quantity or removing a line, and now and then a checkout paid on the fake
Stripe's page. Every ``--sample`` seconds it records each worker's resident memory and the
database's connections. At the end it prints errors and p50/p99 per step, memory over time,
and checks the stock and order invariants in SQL. Not part of CI.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from html import unescape
from pathlib import Path

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.browser import USER_AGENT  # noqa: E402
from devtools.fake_stripe import FakeStripeServer  # noqa: E402

DATABASE_URL = os.environ.get(
    "SOAK_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/elysium_soak"
)
WEBHOOK_SECRET = "whsec_soak_only"  # noqa: S105 (the fake Stripe's, for this run)
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')
LINE_FORM = re.compile(r'action="/cart/items/(\d+)"')
PAY_SESSION = re.compile(r"/pay/(cs_test_\w+)")
PIECES = (
    ("aurelia-fine-chain", {"metal": "yellow-gold"}),
    ("aurelia-fine-chain", {"metal": "rose-gold"}),
    ("aurelia-solitaire-ring", {"metal": "platinum", "diamond": "0.50ct", "size": "6"}),
    ("aurelia-solitaire-ring", {"metal": "yellow-gold", "diamond": "0.30ct", "size": "5"}),
)
DETAILS = {
    "email": "soak@example.com",
    "billing_same": "y",
    "shipping-full_name": "Ada Lovelace",
    "shipping-line1": "12 St James's Square",
    "shipping-city": "London",
    "shipping-postcode": "SW1Y 4JH",
    "shipping-country": "GB",
}
INVARIANTS = {
    "stock below reserved": "SELECT count(*) FROM inventory WHERE reserved > stock_level",
    "reserved units not the sum of the ledger": """
        SELECT count(*) FROM inventory i
        JOIN (SELECT inventory_id, sum(stock_delta) AS stock, sum(reserved_delta) AS held
              FROM stock_movements GROUP BY inventory_id) m ON m.inventory_id = i.id
        WHERE m.held <> i.reserved""",
    "reserved units without a pending order": """
        SELECT count(*) FROM inventory i WHERE i.reserved <> (
            SELECT coalesce(sum(l.quantity), 0) FROM order_lines l JOIN orders o
            ON o.id = l.order_id WHERE l.inventory_id = i.id AND o.status = 'pending'
            AND EXISTS (SELECT 1 FROM stock_movements s WHERE s.order_id = o.id
                        AND s.inventory_id = i.id AND s.kind = 'reserve'))""",
    "paid orders without their commit": """
        SELECT count(*) FROM orders o WHERE o.status = 'paid' AND EXISTS (
            SELECT 1 FROM order_lines l JOIN inventory i ON i.id = l.inventory_id
            WHERE l.order_id = o.id AND NOT EXISTS (
                SELECT 1 FROM stock_movements s WHERE s.order_id = o.id
                AND s.inventory_id = i.id AND s.kind = 'commit'))""",
    "orders whose total is not their lines": """
        SELECT count(*) FROM orders o WHERE o.bespoke_quote_id IS NULL AND o.subtotal <> (
            SELECT coalesce(sum(unit_price * quantity), 0) FROM order_lines
            WHERE order_id = o.id)""",
    "frozen bags without a pending order": """
        SELECT count(*) FROM carts c WHERE c.frozen_at IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM orders o WHERE o.cart_id = c.id AND o.status = 'pending')""",
}


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.timings: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)

    def record(self, step: str, started: float, ok: bool, detail: str = "") -> None:
        with self.lock:
            self.timings[step].append((time.perf_counter() - started) * 1000)
            if not ok:
                self.errors[step].append(detail)


def token(html: str) -> str:
    match = CSRF.search(html)
    if not match:
        raise ValueError("no CSRF token on the page")
    return unescape(match.group(1) or match.group(2))


class Shopper(threading.Thread):
    """One browser, looping through the steps until ``stop`` is set."""

    def __init__(self, base: str, stats: Stats, stop: threading.Event, seed: int) -> None:
        super().__init__(daemon=True)
        self.base, self.stats, self.stop = base, stats, stop
        self.random = random.Random(seed)  # noqa: S311 (a workload, not a secret)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT  # a browser, not a robot

    def step(self, name: str, method: str, path: str, expect: set[int], **kwargs):
        started = time.perf_counter()
        try:
            response = self.session.request(
                method, self.base + path, timeout=30, allow_redirects=False, **kwargs
            )
        except requests.RequestException as error:
            self.stats.record(name, started, False, repr(error))
            return None
        ok = response.status_code in expect
        detail = f"{response.status_code} {path}"
        if not ok:
            title = re.search(r"<h1[^>]*>(.*?)</h1>", response.text, re.S)
            detail += f" {title.group(1).strip() if title else response.text[:120]!r}"
        self.stats.record(name, started, ok, detail)
        return response if ok else None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.visit()
            except Exception as error:  # the soak reports, never stops
                self.stats.record("shopper", time.perf_counter(), False, repr(error))

    def visit(self) -> None:
        self.step("home", "GET", "/", {200})
        self.step("listing", "GET", "/shop", {200})
        self.step("filtered listing", "GET", "/shop?category=ring&metal=platinum", {200})
        slug, choices = self.random.choice(PIECES)
        page = self.step("product page", "GET", f"/shop/{slug}", {200})
        if page is None:
            return
        csrf = token(page.text)
        htmx = {"HX-Request": "true", "X-CSRFToken": csrf}
        self.step(
            "price fragment", "GET", f"/shop/{slug}/price", {200}, params=choices, headers=htmx
        )
        form = {"csrf_token": csrf, "product": slug, "quantity": "1", **choices}
        self.step("add to bag", "POST", "/cart/items", {303, 409}, data=form)
        bag = self.step("bag", "GET", "/cart", {200})
        lines = LINE_FORM.findall(bag.text) if bag is not None else []
        roll = self.random.random()
        if lines and roll < 0.3:
            data = {"csrf_token": csrf, "quantity": str(self.random.randint(1, 2))}
            self.step("change quantity", "POST", f"/cart/items/{lines[0]}", {303, 409}, data=data)
        elif lines and roll < 0.45:
            self.step(
                "remove line",
                "POST",
                f"/cart/items/{lines[0]}/delete",
                {303},
                data={"csrf_token": csrf},
            )
        elif lines and roll < 0.65:
            self.check_out(csrf)

    def check_out(self, csrf: str) -> None:
        started = self.step(
            "checkout", "POST", "/checkout", {303, 409}, data={"csrf_token": csrf, **DETAILS}
        )
        if started is None or started.status_code != 303:
            return
        match = PAY_SESSION.search(started.headers.get("Location", ""))
        if match is None:
            return
        payment = started.headers["Location"].split("/pay/")[0]
        begun = time.perf_counter()
        response = requests.post(
            f"{payment}/pay/{match.group(1)}/pay", timeout=30, allow_redirects=False
        )
        self.stats.record(
            "pay (fake Stripe)",
            begun,
            response.status_code in {302, 303},
            str(response.status_code),
        )
        self.session.cookies.clear()  # a new shopper with an empty bag


def worker_memory(master_pid: int) -> dict[int, int]:
    """Resident memory (MB) of each gunicorn worker, by pid."""
    found = {}
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    for pid in children.read_text().split() if children.exists() else []:
        status = Path(f"/proc/{pid}/status")
        if status.exists():
            match = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
            if match:
                found[int(pid)] = int(match.group(1)) // 1024
    return found


def connections(engine) -> int:
    """Connections to the shop's database, the soak's own included."""
    with engine.connect() as connection:
        return connection.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--shoppers", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--sample", type=float, default=30, help="seconds between samples")
    parser.add_argument("--port", type=int, default=5088)
    parser.add_argument("--report", help="also write the report to this file")
    args = parser.parse_args()

    fresh_database(DATABASE_URL)
    base = f"http://127.0.0.1:{args.port}"
    fake = FakeStripeServer(webhook_url=f"{base}/webhooks/stripe", webhook_secret=WEBHOOK_SECRET)
    fake.start()
    env = {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "ELYSIUM_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "SITE_URL": f"https://127.0.0.1:{args.port}",
        "SESSION_COOKIE_SECURE": "0",  # plain http on loopback
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "REDIS_KEY_PREFIX": f"elysium-soak-{secrets.token_hex(4)}",
        "STRIPE_SECRET_KEY": "sk_test_soak",
        "STRIPE_API_BASE": fake.base_url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "LOG_LEVEL": "WARNING",
    }
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run([*flask, "seed"], cwd=ROOT, env=env, check=True, capture_output=True)
    engine = create_engine(make_url(DATABASE_URL))
    with engine.begin() as connection:
        connection.execute(text("UPDATE inventory SET stock_level = 1000000"))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(args.workers),
            "--bind",
            f"127.0.0.1:{args.port}",
            "--log-level",
            "warning",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=env,
    )
    stats, stop = Stats(), threading.Event()
    samples: list[tuple[float, dict[int, int], int]] = []
    try:
        wait_until_up(base + "/healthz")
        shoppers = [Shopper(base, stats, stop, seed) for seed in range(args.shoppers)]
        for shopper in shoppers:
            shopper.start()
        started = time.monotonic()
        deadline = started + args.minutes * 60
        while time.monotonic() < deadline:
            samples.append(
                (time.monotonic() - started, worker_memory(server.pid), connections(engine))
            )
            stop.wait(min(args.sample, max(deadline - time.monotonic(), 0)))
        stop.set()
        for shopper in shoppers:
            shopper.join(timeout=60)
        samples.append((time.monotonic() - started, worker_memory(server.pid), connections(engine)))
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
        fake.stop()

    with engine.connect() as connection:
        broken = {name: connection.scalar(text(sql)) for name, sql in INVARIANTS.items()}
        orders = dict(
            connection.execute(text("SELECT status, count(*) FROM orders GROUP BY status")).all()
        )
    engine.dispose()
    report = render(args, stats, samples, broken, orders)
    print(report)
    if args.report:
        Path(args.report).write_text(report)
    if any(broken.values()) or any(stats.errors.values()):
        sys.exit(1)


def fresh_database(url: str) -> None:
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def wait_until_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    sys.exit(f"the shop did not come up at {url}")


def render(args, stats: Stats, samples, broken: dict[str, int], orders: dict) -> str:
    lines = [
        f"Soak: {args.minutes:g} min, {args.shoppers} shoppers, {args.workers} gunicorn workers, "
        "PostgreSQL, Redis, fake Stripe",
        "",
        "| step | requests | errors | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for step, timings in sorted(stats.timings.items()):
        ordered = sorted(timings)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        lines.append(
            f"| {step} | {len(timings)} | {len(stats.errors.get(step, []))} "
            f"| {statistics.median(ordered):.1f} | {p99:.1f} |"
        )
    lines += ["", "| minute | worker memory (MB) | database connections |", "|---:|---|---:|"]
    for elapsed, memory, connections in samples:
        shown = " ".join(str(mb) for _, mb in sorted(memory.items()))
        lines.append(f"| {elapsed / 60:.1f} | {shown} | {connections} |")
    lines += ["", f"Orders by status: {orders}", "", "Invariants (rows breaking each):"]
    lines += [f"- {name}: {count}" for name, count in broken.items()]
    for step, errors in stats.errors.items():
        if errors:
            lines.append(f"\nFirst errors in {step}: {errors[:5]}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
