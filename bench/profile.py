"""How long the shop's pages take inside the app, without a server or a network in between.

    .venv/bin/python bench/profile.py                 # PostgreSQL (a fresh database), 300 each
    .venv/bin/python bench/profile.py -n 1000 --top 25
    .venv/bin/python bench/profile.py --sqlite         # a throwaway SQLite file instead
    .venv/bin/python bench/profile.py --page /shop --top 40 --sort tottime
    .venv/bin/python bench/profile.py --redis redis://127.0.0.1:6379/0   # production settings
    .venv/bin/python bench/profile.py --shopper        # with the cookies of a shopper's bag

Builds the app on a migrated database with the demo catalogue (the database named in
PROFILE_DATABASE_URL is dropped and made again), warms each page up, then renders it N times
with the test client and prints milliseconds per request (the median of five batches, wall
clock and this process's CPU time, which leaves out waiting for the database), the SQL
statements per request and the Python function calls per request. The call count comes from
cProfile and does not depend on what else the machine is doing, so it is the figure to compare
on a busy machine; the times are only as steady as the machine. ``--top`` prints cProfile's
list of the functions that cost the most. Targets: ``/shop`` under 3 ms, a product page under
2 ms. Not part of CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This file's folder comes first on the path, and its name hides the standard library's
# ``profile`` (which cProfile imports): look in the project instead.
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402
from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import create_engine, event, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.browser import browsers_without_bags  # noqa: E402
from elysium import create_app  # noqa: E402
from elysium.config import normalise_database_url  # noqa: E402
from elysium.extensions import db  # noqa: E402
from elysium.services.seeding import load_demo_catalogue, seed_catalogue  # noqa: E402

DATABASE_URL = os.environ.get(
    "PROFILE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/elysium_profile"
)
PRODUCT = "aurelia-solitaire-ring"
CHOICES = {"metal": "white-gold", "diamond": "0.50ct", "size": "6"}
ADD_TO_BAG = "POST /cart/items"
PAGES = {
    "/": "home",
    "/shop": "listing",
    "/shop?category=ring&metal=platinum&sort=price-asc": "listing, filtered",
    f"/shop/{PRODUCT}": "product page",
    # What the configurator sends when a choice changes (its fields, and what Add to bag shows)
    f"/shop/{PRODUCT}/price?metal=white-gold&diamond=0.50ct&size=6&engraving=&quantity=1"
    "&add_to_bag_state=available": "price fragment (htmx)",
    ADD_TO_BAG: "add to bag (htmx), the first piece of a new bag each time",
    "/cart": "the bag",
}
HTMX = {"HX-Request": "true"}
BASE_URL = "https://localhost"
TARGETS_MS = {"/shop": 3.0, f"/shop/{PRODUCT}": 2.0}


def fresh_postgres(url: str) -> str:
    url = normalise_database_url(url)
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()
    return url


def build_app(url: str, redis_url: str | None) -> Flask:
    """The app as production runs it (templates not watched for changes, no debug; with
    ``redis_url``, production's settings and stores), on a migrated database holding the
    demo catalogue."""
    instance = tempfile.mkdtemp(prefix="elysium-profile-")
    os.environ["ELYSIUM_INSTANCE_PATH"] = instance
    settings = {
        "ELYSIUM_ENV": "production" if redis_url else "testing",
        "TESTING": False,
        "SECRET_KEY": "profile-only-not-a-secret",
        "SQLALCHEMY_DATABASE_URI": url,
        "SITE_URL": "https://localhost",
        "LOG_LEVEL": "WARNING",
    }
    if redis_url:
        os.environ.update({"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": f"profile-{os.getpid()}"})
    app = create_app(settings)
    app.jinja_env.auto_reload = False
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with app.app_context():
        upgrade()
        seed_catalogue(db.session, load_demo_catalogue())
        db.session.commit()
        db.session.remove()
    return app


def token_of(client: FlaskClient) -> str:
    page = client.get(f"/shop/{PRODUCT}", base_url=BASE_URL).get_data(as_text=True)
    return re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)


def add_to_bag(client: FlaskClient, token: str, *, htmx: bool = False):
    headers = {"X-CSRFToken": token, "Referer": f"{BASE_URL}/shop/{PRODUCT}"}
    return client.post(
        "/cart/items",
        data={"product": PRODUCT, "quantity": "1", **CHOICES},
        headers={**headers, **(HTMX if htmx else {})},
        base_url=BASE_URL,
    )


def shopper(app: Flask) -> FlaskClient:
    """A browser as the benchmark's: it has looked at a piece and has it in its bag, so it
    sends a session, a visitor and a bag cookie."""
    client = app.test_client()
    added = add_to_bag(client, token_of(client))
    assert added.status_code == 303, added.status_code
    client.get(added.location, base_url=BASE_URL)  # "Added … to your bag" is shown, once
    return client


def requester(
    app: Flask, page: str, client: FlaskClient | None = None, n: int = 0
) -> Callable[[], None]:
    """A request for ``page``, made ``n`` times and a few more (warming up, counting)."""
    client = client or app.test_client()
    if page == ADD_TO_BAG:
        return bag_adder(app, client, 22 + n + max(n // 5, 20))
    headers = HTMX if "/price" in page else {}

    def get() -> None:
        response = client.get(page, headers=headers, base_url=BASE_URL)
        if response.status_code != 200:
            raise SystemExit(f"{page} answered {response.status_code}")
        response.close()

    return get


def bag_adder(app: Flask, client: FlaskClient, count: int) -> Callable[[], None]:
    """Add to bag as htmx does, each time as the first piece of a new bag (as the benchmark:
    each add from a browser of its own, ``count`` of them, with its session and CSRF token
    and no bag cookie)."""
    bag_cookie = app.config["CART_COOKIE_NAME"]
    session_cookie = app.config["SESSION_COOKIE_NAME"]
    browsers = iter(list(browsers_without_bags(app.secret_key, count)))

    def post() -> None:
        cookie, token = next(browsers)
        client.delete_cookie(bag_cookie, domain="localhost")
        client.set_cookie(session_cookie, cookie, domain="localhost")
        response = add_to_bag(client, token, htmx=True)
        if response.status_code != 200:
            raise SystemExit(f"add to bag answered {response.status_code}")
        response.close()

    return post


def statements_per_request(app: Flask, get: Callable[[], None]) -> list[str]:
    statements: list[str] = []

    def record(*args) -> None:
        statements.append(args[2])

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        get()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return statements


def timed(get: Callable[[], None], n: int, batches: int = 5) -> tuple[float, float]:
    """Median ms per request (wall clock) over ``batches`` batches of ``n / batches``, and
    the median CPU time of this process per request (waiting for the database excluded)."""
    per_batch = max(n // batches, 1)
    wall, cpu = [], []
    for _ in range(batches):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(per_batch):
            get()
        wall.append((time.perf_counter() - start) * 1000 / per_batch)
        cpu.append((time.process_time() - start_cpu) * 1000 / per_batch)
    return statistics.median(wall), statistics.median(cpu)


def profiled(get: Callable[[], None], n: int) -> tuple[int, pstats.Stats]:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(n):
        get()
    profile.disable()
    stats = pstats.Stats(profile, stream=io.StringIO())
    return round(stats.total_calls / n), stats  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="requests per page (default 300)")
    parser.add_argument("--sqlite", action="store_true", help="a throwaway SQLite file")
    parser.add_argument("--page", action="append", help="only these pages (repeatable)")
    parser.add_argument("--top", type=int, default=0, help="print cProfile's top N functions")
    parser.add_argument("--sort", default="cumulative", help="cProfile sort key for --top")
    parser.add_argument("--sql", action="store_true", help="print each page's SQL statements")
    parser.add_argument(
        "--callers", metavar="REGEX", help="with --top: who calls the functions matching REGEX"
    )
    parser.add_argument(
        "--shopper",
        action="store_true",
        help="as a shopper with a bag (session, visitor and bag cookies), like bench/run.py",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="production settings, with the shared stores in this Redis (as gunicorn runs it)",
    )
    args = parser.parse_args()

    if args.sqlite:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='elysium-profile-db-')}/profile.sqlite3"
    else:
        url = fresh_postgres(DATABASE_URL)
    app = build_app(url, args.redis)
    pages = args.page or list(PAGES)
    who = "a shopper with a bag" if args.shopper else "a first visit, no cookies"
    print(f"\n{make_url(url).get_backend_name()}, {args.n} requests per page, {who}\n")
    print("| page | ms/request | CPU ms/request | SQL statements | Python calls | target |")
    print("|---|---:|---:|---:|---:|---|")
    tops = []
    client = shopper(app) if args.shopper else None
    for page in pages:
        get = requester(app, page, client, args.n)
        for _ in range(20):
            get()
        statements = statements_per_request(app, get)
        count = len(statements)
        median, cpu = timed(get, args.n)
        calls, stats = profiled(get, max(args.n // 5, 20))
        target = TARGETS_MS.get(page)
        verdict = "" if target is None else f"< {target:g} ms " + ("✓" if median < target else "✗")
        print(
            f"| `{page}` | {median:.2f} | {cpu:.2f} | {count} | {calls:,} | {verdict} |", flush=True
        )
        if args.top:
            tops.append((page, stats))
        if args.sql:
            print("\n".join(f"    {' '.join(sql.split())}" for sql in statements))
    for page, stats in tops:
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats(args.sort).print_stats(args.top)
        if args.callers:
            stats.print_callers(args.callers)
        print(f"\n## {page}\n{out.getvalue()}")


if __name__ == "__main__":
    main()
