"""Benchmark the shop window: gunicorn + PostgreSQL + the demo catalogue, measured with wrk.

    make bench                      # or: .venv/bin/python bench/run.py
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/elysium_bench make bench

The database named in BENCH_DATABASE_URL is dropped and made again. Needs wrk (Debian's
package; installed here when missing and running as root). Not part of CI.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/elysium_bench"
)
PORT = int(os.environ.get("BENCH_PORT", "5077"))
WORKERS = int(os.environ.get("BENCH_WORKERS", str((os.cpu_count() or 2) * 2)))
DURATION = os.environ.get("BENCH_DURATION", "10s")
CONNECTIONS = (16, 64)
PAGES = ("/shop", "/shop/aurelia-solitaire-ring")


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        return "wrk"
    sys.exit("wrk is not installed: apt-get install wrk")


def fresh_database() -> None:
    url = make_url(DATABASE_URL)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()


def wait_until_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    sys.exit(f"the shop did not come up at {url}")


LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+(\S+)", re.M)


def to_ms(value: str) -> float:
    number = float(re.sub(r"[a-z]+$", "", value))
    unit = re.search(r"[a-z]+$", value).group(0)
    return number * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def measure(wrk: str, url: str, connections: int) -> dict[str, float]:
    output = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{DURATION}", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}
    for percentile, value in LATENCY.findall(output):
        result[f"p{percentile}"] = to_ms(value)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["errors"] = int(errors.group(1)) if errors else 0
    return result


def main() -> None:
    wrk = ensure_wrk()
    fresh_database()
    env = {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "ELYSIUM_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "SITE_URL": f"https://127.0.0.1:{PORT}",
        # Production counts rate limits in one shared store (several workers here).
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "REDIS_KEY_PREFIX": "elysium-bench",
        "LOG_LEVEL": "WARNING",
    }
    flask = [str(BIN / "flask"), "--app", "wsgi"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run([*flask, "seed"], cwd=ROOT, env=env, check=True)
    server = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "--workers",
            str(WORKERS),
            "--bind",
            f"127.0.0.1:{PORT}",
            "--log-level",
            "warning",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{PORT}"
    try:
        wait_until_up(base + "/healthz")
        for page in PAGES:
            subprocess.run(
                [wrk, "-t1", "-c4", "-d2s", base + page], check=True, capture_output=True
            )
        rows = []
        for page in PAGES:
            for connections in CONNECTIONS:
                result = measure(wrk, base + page, connections)
                rows.append((page, connections, result))
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"\ngunicorn {WORKERS} sync workers, PostgreSQL, wrk -t2 -d{DURATION}\n")
    print("| page | connections | req/s | p50 ms | p90 ms | p99 ms | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for page, connections, r in rows:
        print(
            f"| `{page}` | {connections} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p90']:.1f} "
            f"| {r['p99']:.1f} | {r['errors']} |"
        )


if __name__ == "__main__":
    main()
