"""gunicorn's settings for the shop: ``gunicorn wsgi:app``, started in this folder, reads them.

A flag on gunicorn's command line (or in ``GUNICORN_CMD_ARGS``) wins over this file, so one
setting can be changed for one run. The settings it takes from the environment are listed in
``.env.example``; like wsgi.py, it reads ``.env`` beside it first (unless
``FLASK_SKIP_DOTENV=1``), so they may be kept there too.

Stopping: SIGTERM is a graceful stop. gunicorn stops listening, lets every request already
being answered finish (up to ``graceful_timeout``), then exits. Give the process manager at
least that long before it kills (Docker's ``stop_grace_period``, Kubernetes'
``terminationGracePeriodSeconds``, systemd's ``TimeoutStopSec``). SIGINT and SIGQUIT stop at
once.
"""

import gc
import os
from pathlib import Path

from dotenv import load_dotenv
from flask.helpers import get_load_dotenv
from gunicorn import glogging

from elysium.logs import JsonFormatter, log_format

if get_load_dotenv():
    load_dotenv(Path(__file__).resolve().parent / ".env")


def _whole_number(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"{name} must be a whole number of at least 1, not {raw!r}")
    return int(raw)


def _cpus() -> int:
    """The CPUs this process may run on (a container's cpuset, not the whole host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


# Sync workers: 2 per CPU + 1 (one answers while another waits on the database or Stripe).
workers = _whole_number("WEB_CONCURRENCY", 2 * _cpus() + 1)
# More than one thread makes each worker a threaded one (gthread).
threads = _whole_number("GUNICORN_THREADS", 1)
# A worker silent for this long is killed and replaced. The slowest request the shop makes is
# a payment page: Stripe gets 4 s per try and up to 3 tries (STRIPE_TIMEOUT_SECONDS,
# STRIPE_MAX_NETWORK_RETRIES), so 60 s leaves room for a setting raised.
timeout = 60
# On SIGTERM, requests being answered get this long to finish (as long as that payment page).
graceful_timeout = 40
# Seconds an idle keep-alive connection stays open (threaded workers; sync workers close each
# connection after its answer). Keep it above the load balancer's idle timeout when it talks
# to gunicorn directly.
keepalive = 5
# The proxies whose X-Forwarded-Proto gunicorn believes (gunicorn's own setting and default).
# The app's own trust in X-Forwarded-For/-Proto/-Host is PROXY_FIX_HOPS.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# No access log of gunicorn's: the app logs one line per request, with its request id.
accesslog = None
errorlog = "-"


class ShopLogger(glogging.Logger):
    """gunicorn's own lines (workers starting, signals, timeouts) in the app's ``LOG_FORMAT``:
    with ``json`` every line on stderr is one JSON object."""

    def setup(self, cfg: object) -> None:
        super().setup(cfg)
        environment = os.environ.get("ELYSIUM_ENV", "").strip().lower() or "production"
        if log_format(os.environ.get("LOG_FORMAT"), environment) == "json":
            for handler in self.error_log.handlers:
                handler.setFormatter(JsonFormatter())


logger_class = ShopLogger


def post_worker_init(worker: object) -> None:
    """Once a worker has loaded the app: what it holds for its whole life (the modules, the
    URL map, the models, the settings) leaves the garbage collector's rounds (``gc.freeze``).
    A full collection then looks only at what requests made since, a few milliseconds instead
    of a hundred, which no longer stalls the request that triggers it."""
    gc.collect()
    gc.freeze()
