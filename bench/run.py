"""Benchmark the shop against a bare Flask page: gunicorn + PostgreSQL, measured with wrk.

    make bench                      # or: .venv/bin/python bench/run.py
    BENCH_DURATION=10s BENCH_ROUNDS=3 make bench
    BENCH_PAGES=shop,product BENCH_CONNECTIONS=16 make bench

One invocation makes a fresh database (BENCH_DATABASE_URL, dropped and made again), migrates
it, loads the demo catalogue, adds a member of staff and some paid orders, then serves two
apps under the same gunicorn settings: the shop (production settings, Redis for the shared
stores) and ``bench/reference_app.py``, a minimal Flask app rendering a page of about the
listing's size from one query on the same PostgreSQL. Each page is measured at 1, 16 and 64
connections (BENCH_CONNECTIONS), BENCH_ROUNDS times (2) in turn with the reference, so the
machine's noise shows as the spread between rounds; the table gives requests/s, p50 and p99,
the ratio of the shop's requests/s to the reference's measured in the same round, and the CPU
each request cost the app's processes and PostgreSQL's (read from /proc): on a machine that
runs wrk, the app and the database together, that cost is what sets requests/s.

The pages are those a shopper opens with their cookies (session, visitor, bag: one browser,
signed out), and the staff's orders list with a signed-in member of staff's (second factor
passed). Add to bag is the htmx POST of the product page, each request from a browser of its
own (a session and CSRF token drawn for it beforehand, no bag yet), so each is a first add to
a new bag: a browser's session makes one bag, however many adds it sends. Needs wrk (Debian's
package: `make bench` installs it when missing and running as root) and Redis at REDIS_URL
(redis://127.0.0.1:6379/0). Not part of CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # this folder's profile.py must not hide the standard library's

import http.client  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import timedelta  # noqa: E402

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.browser import USER_AGENT, browsers_without_bags  # noqa: E402
from elysium.config import cookie_name, normalise_database_url  # noqa: E402

BIN = Path(sys.executable).parent
DATABASE_URL = normalise_database_url(
    os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/elysium_bench")
)
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PORT = int(os.environ.get("BENCH_PORT", "5077"))
REFERENCE_PORT = PORT + 1
# As gunicorn.conf.py sizes the shop's workers: 2 per CPU + 1.
WORKERS = int(os.environ.get("BENCH_WORKERS", str(len(os.sched_getaffinity(0)) * 2 + 1)))
DURATION = os.environ.get("BENCH_DURATION", "5s")
CONNECTIONS = tuple(int(c) for c in os.environ.get("BENCH_CONNECTIONS", "1,16,64").split(","))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
ORDERS = int(os.environ.get("BENCH_ORDERS", "60"))

PRODUCT = "aurelia-solitaire-ring"
CHOICES = {"metal": "white-gold", "diamond": "0.50ct", "size": "6"}
STAFF_EMAIL = "bench-staff@elysium.example"
STAFF_PASSWORD = "a long bench password nobody uses"  # noqa: S105 (a throwaway database's)
# Shopper pages: the targets (p99 under 50 ms at 16 connections for each of these).
SHOPPER_PAGES = {"home", "shop", "shop-filtered", "product", "price", "add-to-bag", "bag"}


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        return "wrk"
    sys.exit("wrk is not installed: apt-get install wrk (or run `make bench` as root)")


def fresh_database() -> None:
    url = make_url(DATABASE_URL)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()


def shop_environment() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "ELYSIUM_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "SITE_URL": f"https://127.0.0.1:{PORT}",
        # Production counts rate limits in one shared store (several workers here).
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": f"elysium-bench-{secrets.token_hex(4)}",
        "LOG_LEVEL": "WARNING",
        "ELYSIUM_INSTANCE_PATH": tempfile.mkdtemp(prefix="elysium-bench-"),
        "FLASK_SKIP_DOTENV": "1",
    }


def prepare_data(env: dict[str, str]) -> None:
    """Migrate, load the catalogue, and add what the staff's list shows: a member of staff
    (password set, authenticator enrolled) and ``ORDERS`` paid orders."""
    flask = [str(BIN / "flask"), "--app", "wsgi"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run([*flask, "seed"], cwd=ROOT, env=env, check=True, capture_output=True)
    os.environ.update({k: env[k] for k in ("ELYSIUM_INSTANCE_PATH", "FLASK_SKIP_DOTENV")})
    from elysium import create_app
    from elysium.extensions import db
    from elysium.models import Order, OrderLine, OrderStatus, Product
    from elysium.models.types import utcnow
    from elysium.services.passwords import hash_password
    from elysium.services.staff import create_staff

    app = create_app(
        {
            "ELYSIUM_ENV": "testing",
            "SECRET_KEY": env["SECRET_KEY"],
            "SQLALCHEMY_DATABASE_URI": DATABASE_URL,
            "SITE_URL": env["SITE_URL"],
        }
    )
    with app.app_context():
        staff = create_staff(db.session, STAFF_EMAIL, first_name="Bench").user
        staff.password_hash = hash_password(STAFF_PASSWORD)
        staff.email_verified_at = staff.totp_enrolled_at = utcnow()
        products = db.session.scalars(db.select(Product).order_by(Product.id)).all()
        now = utcnow()
        for number in range(ORDERS):
            product = products[number % len(products)]
            metal = product.metals[0].code
            order = Order(
                number=f"ELY-BENCH{number:04d}",
                email=f"shopper{number}@example.com",
                status=OrderStatus.PAID,
                currency="GBP",
                subtotal=product.base_price,
                total=product.base_price,
                shipping_address={"full_name": f"Shopper {number}", "country": "GB"},
                billing_address={"full_name": f"Shopper {number}", "country": "GB"},
                paid_at=now - timedelta(hours=number),
                created_at=now - timedelta(hours=number),
            )
            order.lines.append(
                OrderLine(
                    product_id=product.id,
                    product_name=product.name,
                    product_slug=product.slug,
                    variant_key=metal,
                    configuration={"metal": metal},
                    configuration_summary=product.metals[0].label,
                    unit_price=product.base_price,
                    quantity=1,
                )
            )
            db.session.add(order)
        db.session.commit()
        db.engine.dispose()


def gunicorn(app: str, port: int, env: dict[str, str], *extra: str) -> subprocess.Popen:
    """The same settings for the shop and the reference: the shop's gunicorn.conf.py (when
    there is one) with BENCH_WORKERS sync workers, and nothing logged below warnings."""
    config = ROOT / "gunicorn.conf.py"
    return subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            *(["--config", str(config)] if config.exists() else []),
            *extra,
            "--workers",
            str(WORKERS),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app,
        ],
        cwd=ROOT,
        env=env,
    )


@dataclass
class Browser:
    """A browser's cookies, kept by hand: the shop's are ``__Host-`` (Secure) cookies, which
    a cookie jar would not send over the loopback's plain HTTP."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, body: dict[str, str] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Cookie": self.cookie_header(), "User-Agent": USER_AGENT, **headers}
        payload = None
        if body is not None:
            payload = urllib.parse.urlencode(body)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=payload, headers=sent)
        response = connection.getresponse()
        text_ = response.read().decode()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value and "Max-Age=0" not in header and "expires=Thu, 01 Jan 1970" not in header:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        connection.close()
        return response.status, dict(response.headers), text_

    def cookie_header(self, without: tuple[str, ...] = ()) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items() if k not in without)

    def token(self, path: str) -> str:
        status, _, page = self.request("GET", path)
        assert status == 200, (path, status)
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
            r'"X-CSRFToken": "([^"]+)"', page
        )
        assert match, f"no CSRF token on {path}"
        return match.group(1)


def shopper(port: int) -> tuple[Browser, str]:
    """A signed-out shopper who has looked at a piece and has it in their bag."""
    browser = Browser(port)
    token = browser.token(f"/shop/{PRODUCT}")
    status, headers, _ = browser.request(
        "POST", "/cart/items", {"product": PRODUCT, "quantity": "1", **CHOICES, "csrf_token": token}
    )
    assert status == 303, f"adding to the bag answered {status}"
    # As a browser follows the redirect: the page it opens shows "Added … to your bag" once.
    # Left unread, the message would be in every measured request's session, shown and
    # taken out of it (a new session cookie signed) each time.
    status, _, _ = browser.request("GET", urllib.parse.urlsplit(headers["Location"]).path)
    assert status == 200, f"the page after adding to the bag answered {status}"
    return browser, token


def staff_member(port: int) -> Browser:
    """A member of staff, signed in with the password and a code from the authenticator."""
    import pyotp

    browser = Browser(port)
    token = browser.token("/auth/login")
    status, _, page = browser.request(
        "POST",
        "/auth/login",
        {"email": STAFF_EMAIL, "password": STAFF_PASSWORD, "csrf_token": token},
    )
    assert status == 303, f"the staff sign-in answered {status}: {page}"
    engine = create_engine(normalise_database_url(DATABASE_URL))
    with engine.connect() as connection:
        secret = connection.scalar(
            text("SELECT totp_secret FROM users WHERE email = :email"), {"email": STAFF_EMAIL}
        )
    engine.dispose()
    token = browser.token("/staff/security/second-factor")
    status, _, _ = browser.request(
        "POST",
        "/staff/security/second-factor",
        {"code": pyotp.TOTP(secret).now(), "csrf_token": token},
    )
    assert status == 303, f"the second factor answered {status}"
    return browser


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    path: str
    headers: dict[str, str]
    method: str = "GET"
    body: str = ""
    # Each request from the next of these browsers (``browsers_file``), its session
    # cookie added to the Cookie header and its token sent as X-CSRFToken.
    browsers: Path | None = None

    def check(self) -> int:
        """One request by hand: the page answers 200, and its size."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"User-Agent": USER_AGENT, **self.headers}
        if self.browsers is not None:
            cookie, token = self.browsers.read_text().splitlines()[-1].split("\t")
            headers["Cookie"] = "; ".join(filter(None, (headers.get("Cookie"), cookie)))
            headers["X-CSRFToken"] = token
        connection.request(self.method, self.path, body=self.body or None, headers=headers)
        response = connection.getresponse()
        size = len(response.read())
        connection.close()
        if response.status != 200:
            sys.exit(f"{self.name}: {self.method} {self.path} answered {response.status}")
        return size


def browsers_file(secret_key: str, count: int) -> Path:
    """``browsers_without_bags`` in a file for wrk: a session cookie and its token a line."""
    name = cookie_name("session", secure=True)
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as browsers:
        for cookie, token in browsers_without_bags(secret_key, count):
            browsers.write(f"{name}={cookie}\t{token}\n")
    return Path(browsers.name)


def targets(shop: int, reference: int, secret_key: str) -> list[Target]:
    browser, _ = shopper(shop)
    staff = staff_member(shop)
    cookies = {"Cookie": browser.cookie_header()}
    bag_cookie = next(name for name in browser.cookies if name.endswith("elysium_bag"))
    session_cookie = next(name for name in browser.cookies if name.endswith("session"))
    htmx = {"HX-Request": "true", "HX-Current-URL": f"http://127.0.0.1:{shop}/shop/{PRODUCT}"}
    # What the configurator sends when a choice changes: its fields, and what Add to bag shows.
    query = urllib.parse.urlencode(
        {**CHOICES, "engraving": "", "quantity": "1", "add_to_bag_state": "available"}
    )
    add = urllib.parse.urlencode({"product": PRODUCT, "quantity": "1", **CHOICES})
    return [
        Target("reference", reference, "/", {}),
        Target("home", shop, "/", cookies),
        Target("shop", shop, "/shop", cookies),
        Target("shop-filtered", shop, "/shop?category=ring&metal=platinum&sort=price-asc", cookies),
        Target("product", shop, f"/shop/{PRODUCT}", cookies),
        Target("price", shop, f"/shop/{PRODUCT}/price?{query}", {**cookies, **htmx}),
        Target(
            "add-to-bag",
            shop,
            "/cart/items",
            {
                "Cookie": browser.cookie_header(without=(bag_cookie, session_cookie)),
                "Content-Type": "application/x-www-form-urlencoded",
                **htmx,
            },
            method="POST",
            body=add,
            browsers=browsers_file(secret_key, BROWSERS),
        ),
        Target("bag", shop, "/cart", cookies),
        Target("staff-orders", shop, "/staff/orders", {"Cookie": staff.cookie_header()}),
    ]


LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+(\S+)", re.M)


def to_ms(value: str) -> float:
    number = float(re.sub(r"[a-z]+$", "", value))
    unit = re.search(r"[a-z]+$", value).group(0)
    return number * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


# wrk's Lua when each request comes from the next browser of a file: its threads take turns
# through the lines, from the first that no earlier measurement used.
NEXT_BROWSER = """
local browsers = {}
for line in io.lines("%(file)s") do
  local cookie, token = line:match("([^\\t]+)\\t([^\\t]+)")
  browsers[#browsers + 1] = {cookie, token}
end
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
sent = 0
function request()
  local browser = browsers[(%(first)d + sent * %(threads)d + id) %% #browsers + 1]
  sent = sent + 1
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["Cookie"] = headers["Cookie"] and (headers["Cookie"] .. "; " .. browser[1]) or browser[1]
  headers["X-CSRFToken"] = browser[2]
  return wrk.format(nil, nil, headers, nil)
end
function done(summary, latency, requests)
  local most = 0
  for _, thread in ipairs(threads) do most = math.max(most, thread:get("sent")) end
  io.write(string.format("browsers used: %%d\\n", most * #threads))
end
"""
BROWSERS = int(os.environ.get("BENCH_BROWSERS", "60000"))
_browsers_used: dict[str, int] = {}
# The gunicorn arbiter serving each port: its workers' CPU time is the app's.
SERVERS: dict[int, int] = {}


def cpu_seconds(server: int | None) -> tuple[float, float]:
    """CPU seconds used so far by the processes of ``server`` (the arbiter and its workers)
    and by PostgreSQL's, read from /proc (Linux; zeros elsewhere). The machine is shared by
    wrk, the workers and the database, so requests per second follow the CPU each request
    costs them all: this says where it goes."""
    app = database = 0
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return 0.0, 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                line = stat.read()
        except OSError:
            continue  # it ended meanwhile
        name = line[line.index("(") + 1 : line.rindex(")")]
        fields = line[line.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
        if server is not None and server in (int(pid), int(fields[1])):
            app += ticks
        elif name.startswith("postgres"):
            database += ticks
    per_second = os.sysconf("SC_CLK_TCK")
    return app / per_second, database / per_second


def measure(wrk: str, target: Target, connections: int, duration: str = DURATION) -> dict:
    threads = min(2, connections)
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}", "--latency"]
    for name, value in {"User-Agent": USER_AGENT, **target.headers}.items():
        command += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        # wrk's Lua: the method and body of every request (headers come from -H).
        body = target.body.replace("\\", "\\\\").replace('"', '\\"')
        script.write(f'wrk.method = "{target.method}"\nwrk.body = "{body}"\n')
        if target.browsers is not None:
            first = _browsers_used.get(target.name, 0)
            values = {"file": target.browsers, "first": first, "threads": threads}
            script.write(NEXT_BROWSER % values)
    command += ["-s", script.name, f"http://127.0.0.1:{target.port}{target.path}"]
    app_before, database_before = cpu_seconds(SERVERS.get(target.port))
    try:
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(script.name)
    app_after, database_after = cpu_seconds(SERVERS.get(target.port))
    if target.browsers is not None:
        sent = int(re.search(r"browsers used: (\d+)", output).group(1))
        used = _browsers_used[target.name] = _browsers_used.get(target.name, 0) + sent
        if used > BROWSERS:
            print(
                f"{target.name}: {used} requests, {BROWSERS} browsers: some added to a bag "
                "they had (raise BENCH_BROWSERS)",
                file=sys.stderr,
            )
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}
    for percentile, value in LATENCY.findall(output):
        result[f"p{percentile}"] = to_ms(value)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
        output,
    )
    result["errors"] = (int(errors.group(1)) if errors else 0) + (
        sum(int(n) for n in socket.groups()) if socket else 0
    )
    total = int(re.search(r"(\d+) requests in", output).group(1)) or 1
    result["app_cpu_ms"] = (app_after - app_before) * 1000 / total
    result["database_cpu_ms"] = (database_after - database_before) * 1000 / total
    return result


def spread(values: list[float]) -> float:
    """How far apart the rounds are: (highest - lowest) / mean, in percent."""
    mean = statistics.fmean(values)
    return (max(values) - min(values)) / mean * 100 if mean else 0.0


def report(results: dict[tuple[str, int], list[dict]], sizes: dict[str, int]) -> None:
    print(
        f"\ngunicorn {WORKERS} sync workers, PostgreSQL, wrk -d{DURATION} per point, "
        f"{ROUNDS} rounds (req/s is their mean; spread = (max - min) / mean)\n"
    )
    print(
        "| page | KB | conns | req/s | spread | p50 ms | p99 ms | errors | ratio to reference"
        " | app CPU ms | PostgreSQL CPU ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = list(dict.fromkeys(name for name, _ in results))
    for name in names:
        for connections in CONNECTIONS:
            runs = results[name, connections]
            rps = [run["rps"] for run in runs]
            reference = [run["rps"] for run in results["reference", connections]]
            ratio = statistics.fmean(r / ref for r, ref in zip(rps, reference, strict=True))
            p99 = max(run["p99"] for run in runs)
            flag = " ⚠" if name in SHOPPER_PAGES and connections == 16 and p99 >= 50 else ""
            print(
                f"| {name} | {sizes[name] / 1024:.1f} | {connections} | {statistics.fmean(rps):.0f}"
                f" | {spread(rps):.0f}% | {statistics.fmean(run['p50'] for run in runs):.1f}"
                f" | {p99:.1f}{flag} | {sum(run['errors'] for run in runs)}"
                f" | {'' if name == 'reference' else f'{ratio:.2f}'}"
                f" | {statistics.fmean(run['app_cpu_ms'] for run in runs):.2f}"
                f" | {statistics.fmean(run['database_cpu_ms'] for run in runs):.2f} |"
            )
    print("\nratio: the shop's req/s over the reference's in the same round, averaged over rounds.")
    print("⚠: p99 at 16 connections is 50 ms or more on a shopper page.")
    print(
        "CPU ms: per request, the app's gunicorn processes and PostgreSQL's (the whole server's:"
        " keep the machine quiet), during the measurement; wrk and the kernel not counted."
    )


def main() -> None:
    wrk = ensure_wrk()
    fresh_database()
    env = shop_environment()
    prepare_data(env)
    wanted = os.environ.get("BENCH_PAGES")
    shop = gunicorn("wsgi:app", PORT, env)
    reference = gunicorn("reference_app:app", REFERENCE_PORT, env, "--chdir", "bench")
    SERVERS.update({PORT: shop.pid, REFERENCE_PORT: reference.pid})
    results: dict[tuple[str, int], list[dict]] = {}
    try:
        for port in (PORT, REFERENCE_PORT):
            wait_until_up(port)
        chosen = [
            t
            for t in targets(PORT, REFERENCE_PORT, env["SECRET_KEY"])
            if not wanted or t.name == "reference" or t.name in wanted.split(",")
        ]
        sizes = {t.name: t.check() for t in chosen}
        for target in chosen:  # warm every worker up (templates compiled, pools filled)
            measure(wrk, target, 8, "2s")
        for round_ in range(1, ROUNDS + 1):
            for target in chosen:
                for connections in CONNECTIONS:
                    result = measure(wrk, target, connections)
                    results.setdefault((target.name, connections), []).append(result)
                    print(
                        f"round {round_}: {target.name:>13} c={connections:<3}"
                        f" {result['rps']:8.0f} req/s  p99 {result['p99']:7.1f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        for server in (shop, reference):
            server.terminate()
            server.wait(timeout=15)
    report(results, sizes)


def wait_until_up(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    sys.exit(f"nothing answered on port {port}")


if __name__ == "__main__":
    main()
