"""Settings read from the environment the process was given.

``.env`` is loaded where a real process starts (``wsgi.py``; the ``flask`` command loads it
by itself), never by the app factory, so tests see only the settings they pass.

Every setting is listed, with its meaning, in ``.env.example``.
"""

from __future__ import annotations

import gc
import os
import re
import secrets
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from argon2.profiles import RFC_9106_LOW_MEMORY

ENVIRONMENTS = ("development", "testing", "production")

# Where `make run` serves the shop.
DEVELOPMENT_SITE_URL = "http://127.0.0.1:5000"
LOCAL_HOSTS = ("localhost", "127.0.0.1")
HOST_NAME = re.compile(r"\.?[a-z0-9-]+(\.[a-z0-9-]+)*")
HOST_COOKIE_PREFIX = "__Host-"


class ConfigurationError(RuntimeError):
    """The app cannot start with these settings."""


def normalise_database_url(url: str) -> str:
    """Point PostgreSQL URLs at the psycopg 3 driver, whatever spelling the host gives us."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "")
    if raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a whole number, not {raw!r}") from exc


def settings_from_environment(environ: Mapping[str, str], instance_path: str) -> dict[str, Any]:
    """Build the Flask config mapping from environment variables."""
    env = environ.get("ELYSIUM_ENV", "production").strip().lower() or "production"
    if env not in ENVIRONMENTS:
        raise ConfigurationError(f"ELYSIUM_ENV must be one of {', '.join(ENVIRONMENTS)}")
    default_db = "sqlite:///" + str(Path(instance_path) / "elysium.sqlite3")
    production = env == "production"
    secure_cookies = _flag(environ.get("SESSION_COOKIE_SECURE"), default=production)
    return {
        "ELYSIUM_ENV": env,
        "SECRET_KEY": environ.get("SECRET_KEY") or None,
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(
            environ.get("DATABASE_URL") or default_db
        ),
        "DATABASE_REPLICA_URL": normalise_database_url(environ.get("DATABASE_REPLICA_URL", ""))
        or None,
        "DATABASE_PRIMARY_AFTER_WRITE_SECONDS": _int(
            environ, "DATABASE_PRIMARY_AFTER_WRITE_SECONDS", 5
        ),
        "DATABASE_REPLICA_TIMEOUT_SECONDS": _int(environ, "DATABASE_REPLICA_TIMEOUT_SECONDS", 2),
        "DATABASE_REPLICA_MAX_LAG_SECONDS": _int(environ, "DATABASE_REPLICA_MAX_LAG_SECONDS", 10),
        "SITE_URL": environ.get("SITE_URL", "").strip() or None,
        "TRUSTED_HOSTS": host_names(environ.get("TRUSTED_HOSTS", "")),
        "PREFERRED_URL_SCHEME": "https" if production else "http",
        "SHOP_CURRENCY": environ.get("SHOP_CURRENCY", "GBP").upper(),
        "SHOP_PAGE_SIZE": _int(environ, "SHOP_PAGE_SIZE", 12),
        "CART_COOKIE_NAME": cookie_name(
            environ.get("CART_COOKIE_NAME", "elysium_bag"), secure=secure_cookies
        ),
        "CART_COOKIE_DAYS": _int(environ, "CART_COOKIE_DAYS", 60),
        "MAX_CONTENT_LENGTH": _int(environ, "MAX_CONTENT_LENGTH", 1024 * 1024),
        "SESSION_COOKIE_NAME": cookie_name("session", secure=secure_cookies),
        "SESSION_COOKIE_PATH": "/",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": secure_cookies,
        "WTF_CSRF_TIME_LIMIT": None,
        "SEND_FILE_MAX_AGE_DEFAULT": _int(environ, "STATIC_MAX_AGE", 3600 if production else 0),
        "LOG_LEVEL": environ.get("LOG_LEVEL", "INFO").upper(),
        "LOG_FORMAT": environ.get("LOG_FORMAT", "").strip().lower() or None,
        "SENTRY_DSN": environ.get("SENTRY_DSN", "").strip() or None,
        "REDIS_URL": environ.get("REDIS_URL") or None,
        "REDIS_KEY_PREFIX": environ.get("REDIS_KEY_PREFIX", "").strip() or "elysium",
        "SINGLE_PROCESS": _flag(environ.get("SINGLE_PROCESS")),
        "CACHE_DEFAULT_TIMEOUT": _int(environ, "CACHE_DEFAULT_TIMEOUT", 60),
        "PROXY_FIX_HOPS": _int(environ, "PROXY_FIX_HOPS", 0),
        "REMEMBER_COOKIE_NAME": cookie_name("remember_token", secure=secure_cookies),
        "REMEMBER_COOKIE_PATH": "/",
        "REMEMBER_COOKIE_DURATION": timedelta(days=_int(environ, "REMEMBER_DAYS", 30)),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": secure_cookies,
        "PASSWORD_RESET_MAX_AGE": _int(environ, "PASSWORD_RESET_MAX_AGE", 3600),
        **password_hash_cost(environ),
        "GOOGLE_CLIENT_ID": environ.get("GOOGLE_CLIENT_ID") or None,
        "GOOGLE_CLIENT_SECRET": environ.get("GOOGLE_CLIENT_SECRET") or None,
        "GOOGLE_ISSUER": environ.get("GOOGLE_ISSUER", "https://accounts.google.com").rstrip("/"),
        "GOOGLE_TIMEOUT_SECONDS": _int(environ, "GOOGLE_TIMEOUT_SECONDS", 5),
        "EMAIL_BACKEND": environ.get("EMAIL_BACKEND", "console").strip().lower(),
        "EMAIL_FROM": environ.get("EMAIL_FROM", "ELYSIUM <hello@elysium.example>"),
        "STAFF_EMAIL": environ.get("STAFF_EMAIL", "atelier@elysium.example"),
        # The house's name and postal address, at the foot of every email.
        "HOUSE_ADDRESS": (
            environ.get("HOUSE_ADDRESS", "").strip()
            or "ELYSIUM Fine Jewellery Ltd · Hatton Garden, London"
        ),
        "BESPOKE_NOTIFY_EMAIL": (
            environ.get("BESPOKE_NOTIFY_EMAIL")
            or environ.get("STAFF_EMAIL")
            or "atelier@elysium.example"
        ).strip(),
        "BESPOKE_MIN_FILL_SECONDS": _int(environ, "BESPOKE_MIN_FILL_SECONDS", 3),
        "RESEND_API_KEY": environ.get("RESEND_API_KEY") or None,
        "RESEND_BASE_URL": environ.get("RESEND_BASE_URL", "https://api.resend.com").rstrip("/"),
        "EMAIL_TIMEOUT_SECONDS": _int(environ, "EMAIL_TIMEOUT_SECONDS", 5),
        "EMAIL_GIVE_UP_AFTER_HOURS": email_give_up_after_hours(environ),
        "STRIPE_SECRET_KEY": environ.get("STRIPE_SECRET_KEY") or None,
        "STRIPE_WEBHOOK_SECRET": environ.get("STRIPE_WEBHOOK_SECRET") or None,
        "STRIPE_API_BASE": (environ.get("STRIPE_API_BASE") or "").rstrip("/") or None,
        "STRIPE_TIMEOUT_SECONDS": _int(environ, "STRIPE_TIMEOUT_SECONDS", 4),
        "STRIPE_MAX_NETWORK_RETRIES": _int(environ, "STRIPE_MAX_NETWORK_RETRIES", 2),
        "STRIPE_WEBHOOK_TOLERANCE_SECONDS": _int(environ, "STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300),
        "CHECKOUT_EXPIRY_MINUTES": checkout_expiry_minutes(environ),
        "SANITY_PROJECT_ID": environ.get("SANITY_PROJECT_ID", "").strip() or None,
        "SANITY_DATASET": environ.get("SANITY_DATASET", "").strip() or None,
        "SANITY_API_VERSION": environ.get("SANITY_API_VERSION", "").strip() or "v2025-02-19",
        "SANITY_READ_TOKEN": environ.get("SANITY_READ_TOKEN") or None,
        "SANITY_API_HOST": (environ.get("SANITY_API_HOST") or "").strip().rstrip("/") or None,
        "SANITY_WEBHOOK_SECRET": environ.get("SANITY_WEBHOOK_SECRET") or None,
        "SANITY_TIMEOUT_SECONDS": _int(environ, "SANITY_TIMEOUT_SECONDS", 10),
        "SANITY_MAX_RETRIES": _int(environ, "SANITY_MAX_RETRIES", 3),
        "SANITY_WEBHOOK_TIMEOUT_SECONDS": _int(environ, "SANITY_WEBHOOK_TIMEOUT_SECONDS", 3),
        "SANITY_SYNC_TIMEOUT_SECONDS": _int(environ, "SANITY_SYNC_TIMEOUT_SECONDS", 600),
        "SIGNATURE_REQUIRED_ABOVE": _int(environ, "SIGNATURE_REQUIRED_ABOVE", 50000),
    }


# A request gives up on opening a connection to PostgreSQL after this long (libpq counts whole
# seconds, and at least 2), and on waiting for a free one in its process's pool after this long.
DATABASE_CONNECT_TIMEOUT_SECONDS = 3
DATABASE_POOL_TIMEOUT_SECONDS = 5


def engine_options(url: str) -> dict[str, Any]:
    """SQLAlchemy's engine options for the database at ``url``.

    A PostgreSQL connection is checked as a request takes it from the pool
    (``elysium.db_pool``), so after the database restarts the first request gets a new
    connection rather than a dead one; SQLite's are tested before each use (``pool_pre_ping``).
    While the database is unreachable no request waits long for it: a refused connection fails
    at once, one that gets no answer after ``DATABASE_CONNECT_TIMEOUT_SECONDS``, and the
    shopper sees the "back in a moment" page (``elysium.errors``).
    """
    options: dict[str, Any] = {}
    if normalise_database_url(url).startswith("postgresql"):
        options["pool_timeout"] = DATABASE_POOL_TIMEOUT_SECONDS
        options["connect_args"] = {"connect_timeout": DATABASE_CONNECT_TIMEOUT_SECONDS}
    else:
        options["pool_pre_ping"] = True
    return options


def cookie_name(name: str, *, secure: bool) -> str:
    """The name a cookie of the shop's goes by: ``__Host-<name>`` when it is sent over HTTPS
    only (production: ``SESSION_COOKIE_SECURE``), the plain name otherwise (http:// in
    development and tests can't keep a Secure cookie).

    A browser keeps a ``__Host-`` cookie only if it is Secure, has ``Path=/`` and no
    ``Domain``, and no other subdomain and no plain-http page can set or replace it: set one
    with ``secure=config["SESSION_COOKIE_SECURE"]``, ``path="/"`` and no ``domain``. A name
    that already has a prefix is kept as it is.
    """
    if not secure or name.startswith((HOST_COOKIE_PREFIX, "__Secure-")):
        return name
    return HOST_COOKIE_PREFIX + name


def checkout_expiry_minutes(environ: Mapping[str, str]) -> int:
    """How long a Checkout Session (and its stock reservation) lasts: 30 to 60 minutes."""
    minutes = _int(environ, "CHECKOUT_EXPIRY_MINUTES", 30)
    if not 30 <= minutes <= 60:
        raise ConfigurationError("CHECKOUT_EXPIRY_MINUTES must be between 30 and 60")
    return minutes


def email_give_up_after_hours(environ: Mapping[str, str]) -> int:
    """How long an email that failed for a passing reason is tried again: 1 to 23 hours, so
    every retry falls within the 24 hours in which Resend answers a repeated idempotency key
    with the email it already took, instead of sending it again."""
    hours = _int(environ, "EMAIL_GIVE_UP_AFTER_HOURS", 23)
    if not 1 <= hours <= 23:
        raise ConfigurationError("EMAIL_GIVE_UP_AFTER_HOURS must be between 1 and 23")
    return hours


def password_hash_cost(environ: Mapping[str, str]) -> dict[str, int]:
    """Argon2id's cost. The default is RFC 9106's low-memory profile (3 passes over 64 MiB in
    4 lanes); the tests turn it down, production should only ever turn it up."""
    time_cost = _int(environ, "PASSWORD_HASH_TIME_COST", RFC_9106_LOW_MEMORY.time_cost)
    memory_kib = _int(environ, "PASSWORD_HASH_MEMORY_KIB", RFC_9106_LOW_MEMORY.memory_cost)
    parallelism = _int(environ, "PASSWORD_HASH_PARALLELISM", RFC_9106_LOW_MEMORY.parallelism)
    if time_cost < 1 or parallelism < 1:
        raise ConfigurationError(
            "PASSWORD_HASH_TIME_COST and PASSWORD_HASH_PARALLELISM must be at least 1"
        )
    if memory_kib < 8 * parallelism:
        raise ConfigurationError(
            "PASSWORD_HASH_MEMORY_KIB must be at least 8 KiB per lane (PASSWORD_HASH_PARALLELISM)"
        )
    return {
        "PASSWORD_HASH_TIME_COST": time_cost,
        "PASSWORD_HASH_MEMORY_KIB": memory_kib,
        "PASSWORD_HASH_PARALLELISM": parallelism,
    }


# How long a request waits for Redis before rate limits are counted in the process's memory.
REDIS_TIMEOUT_SECONDS = 0.5


def rate_limit_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Flask-Limiter's settings: where every rate limit is counted.

    A limit holds for the whole shop only if every server process counts in one store: Redis,
    at ``REDIS_URL``. Outside production the default is the process's own memory. Production
    refuses to start without Redis unless ``SINGLE_PROCESS`` says that one process serves the
    shop, and refuses that too when it can see otherwise (gunicorn running several workers).

    When Redis stops answering, each process counts in its own memory until it answers again
    (Flask-Limiter logs the switch): the limits still apply, looser by the number of processes,
    and no request fails. Each question to Redis waits ``REDIS_TIMEOUT_SECONDS`` at most.
    """
    uri = config.get("RATELIMIT_STORAGE_URI") or config["REDIS_URL"] or "memory://"
    shared = not uri.startswith("memory://")
    if config["ELYSIUM_ENV"] == "production" and not shared:
        if not config["SINGLE_PROCESS"]:
            raise ConfigurationError(
                "REDIS_URL is not set. Rate limits (sign-in, sign-up, password reset) must be "
                "counted in one store that every server process shares, or each process "
                "allows the whole limit again. Set REDIS_URL (for example "
                "redis://127.0.0.1:6379/0), or SINGLE_PROCESS=1 if exactly one process serves "
                "the shop."
            )
        if (workers := gunicorn_workers()) is not None and workers > 1:
            raise ConfigurationError(
                f"SINGLE_PROCESS=1 says one process serves the shop, but gunicorn runs {workers} "
                "workers, and each would count rate limits on its own. Set REDIS_URL, or run "
                "gunicorn with --workers 1."
            )
    if not shared:
        return {"RATELIMIT_STORAGE_URI": uri}
    return {
        "RATELIMIT_STORAGE_URI": uri,
        "RATELIMIT_STORAGE_OPTIONS": {
            "key_prefix": config["REDIS_KEY_PREFIX"],
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
            "wrap_exceptions": True,
        },
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
    }


def cache_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Flask-Caching's settings: Redis at ``REDIS_URL`` when it is set (one cache for every
    process, keys under ``REDIS_KEY_PREFIX``), else the process's own memory. What is cached
    is small and short-lived (``CACHE_DEFAULT_TIMEOUT`` seconds, 60 by default), so a cache
    per process only means each process works it out once a minute."""
    timeout = int(config.get("CACHE_DEFAULT_TIMEOUT") or 60)
    if not config.get("REDIS_URL"):
        return {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": timeout}
    return {
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": config["REDIS_URL"],
        "CACHE_KEY_PREFIX": f"{config['REDIS_KEY_PREFIX']}:cache:",
        "CACHE_DEFAULT_TIMEOUT": timeout,
        "CACHE_OPTIONS": {
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
        },
    }


def gunicorn_workers() -> int | None:
    """How many worker processes gunicorn runs, when this process is gunicorn's (a worker, or
    the master with ``--preload``); None otherwise. Read from gunicorn's own settings object,
    so its command line, ``GUNICORN_CMD_ARGS``, ``WEB_CONCURRENCY`` and config file all count.
    """
    base = sys.modules.get("gunicorn.app.base")
    if base is None:
        return None
    for candidate in gc.get_objects():
        if issubclass(type(candidate), base.BaseApplication) and candidate.cfg is not None:
            return int(candidate.cfg.workers)
    return None


def site_url(value: str | None, production: bool) -> str:
    """``SITE_URL``, checked and without a trailing slash: every absolute link is built on it.

    Outside production it defaults to where ``make run`` serves the shop; production has no
    default, as no guess (least of all the Host header of some request) can be trusted.
    """
    if not value and not production:
        value = DEVELOPMENT_SITE_URL
    if not value:
        raise ConfigurationError(
            "SITE_URL is not set. Set it to the shop's public address (for example "
            "SITE_URL=https://www.elysium.example) before starting in production: links in "
            "emails, the sitemap and Stripe's return pages are built on it, never on the Host "
            "header a request came with."
        )
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number from 0 to 65535)
    except ValueError as exc:
        raise ConfigurationError(f"SITE_URL has an invalid port: {value!r}") from exc
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not HOST_NAME.fullmatch(parts.hostname)
        or parts.username is not None
        or any(char.isspace() for char in value)
    ):
        raise ConfigurationError(
            "SITE_URL must be an http:// or https:// address with a host name, like "
            f"https://www.elysium.example, not {value!r}"
        )
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ConfigurationError(f"SITE_URL must not have a query or a fragment: {value!r}")
    if production and parts.scheme != "https":
        raise ConfigurationError(
            f"SITE_URL must be an https:// address in production, not {value!r}"
        )
    return urlunsplit((parts.scheme, parts.netloc.lower(), parts.path.rstrip("/"), "", ""))


def host_names(value: str) -> list[str] | None:
    """``TRUSTED_HOSTS``: host names separated by commas; ``.example.com`` also trusts every
    subdomain of example.com. ``None`` when unset."""
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    for name in names:
        if not HOST_NAME.fullmatch(name):
            raise ConfigurationError(
                "TRUSTED_HOSTS lists host names without scheme or port, separated by commas "
                f"(a leading dot also trusts subdomains), not {name!r}"
            )
    return names or None


def trusted_hosts(site_url: str, listed: list[str] | None, production: bool) -> list[str]:
    """The hosts a request may name: ``SITE_URL``'s, and those in ``TRUSTED_HOSTS`` (by
    default none in production, ``localhost`` and ``127.0.0.1`` elsewhere)."""
    others = listed if listed is not None else ([] if production else list(LOCAL_HOSTS))
    return list(dict.fromkeys([str(urlsplit(site_url).hostname), *others]))


def development_secret_key(instance_path: str) -> str:
    """A key made once per checkout and kept in ``instance/``, so sessions survive restarts."""
    path = Path(instance_path) / "secret_key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
