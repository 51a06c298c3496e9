"""ELYSIUM: the online boutique of a fine-jewellery house."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from flask import Flask
from flask.templating import Environment

from elysium.config import (
    ConfigurationError,
    cache_settings,
    development_secret_key,
    engine_options,
    rate_limit_settings,
    settings_from_environment,
)
from elysium.logs import LoggedPaths

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Templates(Environment):
    """Flask's templates, each seeing the environment's globals as they are (a read-only view
    of them), not through a ``ChainMap`` of its own (Jinja's default). A template that imports
    macros compares its global names with the imported template's on every render; through a
    ``ChainMap`` that is a few hundred Python calls a page, over one dict a comparison Python
    makes in C. The shop's templates have no globals of their own; a template loaded with
    some gets its own map, and asking for one already loaded with some more fails (Jinja
    would write them into the view) rather than giving them to every template."""

    def make_globals(self, d: Any = None) -> Any:
        return MappingProxyType(self.globals) if not d else super().make_globals(d)


class Shop(LoggedPaths, Flask):
    """Flask, logging an unhandled exception without a link's secret (``LoggedPaths``), with
    :class:`Templates`."""

    jinja_environment = Templates


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Assemble the app: settings, extensions, blueprints, error pages, commands.

    Settings come from ``os.environ`` and ``config`` only: ``.env`` is the entry point's job.
    """
    instance_path = os.environ.get("ELYSIUM_INSTANCE_PATH") or str(PROJECT_ROOT / "instance")
    app = Shop(
        __name__,
        instance_path=instance_path,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    environ = dict(os.environ)
    if config and "ELYSIUM_ENV" in config:
        environ["ELYSIUM_ENV"] = config["ELYSIUM_ENV"]
    app.config.from_mapping(settings_from_environment(environ, instance_path))
    if config:
        app.config.update(config)
    # From the database the app will use, which ``config`` may name.
    app.config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS", engine_options(app.config["SQLALCHEMY_DATABASE_URI"])
    )
    ensure_secret_key(app)
    from elysium.urls import init_app as init_urls

    init_urls(app)  # before the extensions: an unknown host is refused before their hooks run
    from elysium.edge import init_app as init_edge

    init_edge(app)  # so is text that can't be read (after the host: its page needs SITE_URL)
    if hops := app.config["PROXY_FIX_HOPS"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]

    configure_logging(app)
    register_extensions(app)
    register_templating(app)
    from elysium.web.fragments import code_version

    # Read as the code is loaded, not at the first page that keeps something: a worker of
    # the last release, its files replaced under it, would file what its code draws under
    # the new release's digest, for the new release's servers to show.
    code_version()
    register_request_hooks(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_commands(app)
    from elysium.security import register_security_headers

    register_security_headers(app)
    return app


def ensure_secret_key(app: Flask) -> None:
    if app.config.get("SECRET_KEY"):
        return
    if app.config["ELYSIUM_ENV"] == "production":
        raise ConfigurationError(
            "SECRET_KEY is not set. Set it in the environment (for example with "
            "`python -c 'import secrets; print(secrets.token_hex(32))'`) before starting "
            "in production."
        )
    app.config["SECRET_KEY"] = development_secret_key(app.instance_path)


def configure_logging(app: Flask) -> None:
    """Log lines with the request id, in ``LOG_FORMAT``; errors to Sentry if configured."""
    from elysium.integrations.sentry import init_app as init_sentry
    from elysium.logs import init_app as init_logs

    init_logs(app)
    init_sentry(app)


def register_extensions(app: Flask) -> None:
    from elysium import models  # noqa: F401  (every table must be known to Alembic)
    from elysium.db_pool import check_connections_as_taken
    from elysium.db_routing import init_app as init_read_replica
    from elysium.extensions import cache, csrf, db, limiter, migrate
    from elysium.integrations.google import init_app as init_google
    from elysium.integrations.sanity import check_settings as check_sanity_settings
    from elysium.integrations.stripe_gateway import check_settings as check_stripe_settings
    from elysium.services.outbox import init_app as init_outbox
    from elysium.web.sign_in import init_app as init_sessions
    from elysium.web.signatures import reuse_csrf_token
    from elysium.web.throttle import init_app as init_throttle

    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    db.init_app(app)
    with app.app_context():
        check_connections_as_taken(db.engine)
    init_read_replica(app)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    app.before_request(reuse_csrf_token)
    init_sessions(app)
    init_google(app)
    check_stripe_settings(app)
    check_sanity_settings(app)
    app.config.update(rate_limit_settings(app.config))
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    # Retry-After is written by the page that refuses, which knows which rule refused (Flask-
    # Limiter would overwrite it with the longest window of the route's limits).
    app.config.setdefault("RATELIMIT_HEADER_RETRY_AFTER", "X-RateLimit-Retry-After")
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "elysium")
    limiter.init_app(app)
    cache.init_app(app, config=cache_settings(app.config))
    init_throttle(app)
    init_outbox(app)


def register_templating(app: Flask) -> None:
    from elysium.countries import country_name
    from elysium.house_time import in_house_time
    from elysium.integrations import google
    from elysium.integrations.stripe_gateway import demo_payments
    from elysium.models.catalog import Category
    from elysium.money import format_money
    from elysium.seo import product_json_ld
    from elysium.services import cart as carts
    from elysium.services.orders import (
        STATUS_LABELS,
        headline,
        held_after_cancelling,
        money_taken,
        refund_turned_back,
        returned_by_bank,
        shipment,
        shopper_refunds,
        shopper_timeline,
        tracking_link_for,
    )
    from elysium.services.outbox import typed_lines
    from elysium.services.profiles import PREFERRED_METALS
    from elysium.services.shipping import CARRIERS
    from elysium.urls import absolute_url, modify_query
    from elysium.web.artwork import collection_picture, line_picture, product_picture
    from elysium.web.browsing import recently_viewed
    from elysium.web.cart import cart_template_context
    from elysium.web.fragments import drawn_once, kept_markup
    from elysium.web.quotes import quote_panel
    from elysium.web.wishlist import wishlist_heart

    app.jinja_env.filters["money"] = format_money
    app.jinja_env.filters["house_time"] = in_house_time
    app.jinja_env.filters["typed_lines"] = typed_lines
    app.jinja_env.globals["absolute_url"] = absolute_url
    app.jinja_env.globals["modify_query"] = modify_query
    app.jinja_env.globals["product_json_ld"] = product_json_ld
    app.jinja_env.globals["categories"] = list(Category)
    app.jinja_env.globals["order_status_label"] = STATUS_LABELS.__getitem__
    app.jinja_env.globals["order_timeline"] = shopper_timeline
    app.jinja_env.globals["order_headline"] = headline
    app.jinja_env.globals["order_shipment"] = shipment
    app.jinja_env.globals["order_tracking_link"] = tracking_link_for
    app.jinja_env.globals["order_refunds"] = shopper_refunds
    app.jinja_env.globals["order_money_taken"] = money_taken
    app.jinja_env.globals["order_held_after_cancelling"] = held_after_cancelling
    app.jinja_env.globals["order_returned_by_bank"] = returned_by_bank
    app.jinja_env.globals["order_refund_turned_back"] = refund_turned_back
    app.jinja_env.globals["demo_payments"] = demo_payments
    app.jinja_env.globals["current_year"] = lambda: datetime.now(UTC).year
    app.jinja_env.globals["country_label"] = country_name
    app.jinja_env.globals["metal_label"] = lambda code: PREFERRED_METALS.get(code or "", "")
    app.jinja_env.globals["wishlist_heart"] = wishlist_heart
    app.jinja_env.globals["kept_markup"] = kept_markup
    app.jinja_env.globals["drawn_once"] = drawn_once
    app.jinja_env.globals["product_picture"] = product_picture
    app.jinja_env.globals["line_picture"] = line_picture
    app.jinja_env.globals["collection_picture"] = collection_picture
    app.jinja_env.globals["recently_viewed"] = recently_viewed
    app.jinja_env.globals["couriers"] = list(CARRIERS.values())
    # What a quantity <select> offers (partials/_forms.html, quantity_options).
    app.jinja_env.globals["quantity_choices"] = tuple(
        str(n) for n in range(1, carts.MAX_QUANTITY_PER_LINE + 1)
    )
    app.jinja_env.globals["quote_panel"] = quote_panel
    app.context_processor(cart_template_context)
    app.context_processor(lambda: {"google_enabled": google.enabled()})
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True


def register_request_hooks(app: Flask) -> None:
    """App-wide hooks of the request layer (the blueprints register none of their own)."""
    from elysium.web.cart import write_cart_cookie
    from elysium.web.compression import compress
    from elysium.web.conditional import revalidate
    from elysium.web.devices import write_device_cookie
    from elysium.web.static_files import init_app as init_static_files

    init_static_files(app)
    # After-request hooks run last registered first: a page is compared (304) before its body
    # is compressed; the extensions' hooks, registered earlier, only add headers and cookies.
    app.after_request(compress)
    app.after_request(revalidate)
    app.after_request(write_cart_cookie)
    app.after_request(write_device_cookie)


def register_blueprints(app: Flask) -> None:
    from elysium.account.routes import bp as account_bp
    from elysium.art.routes import bp as art_bp
    from elysium.auth.routes import bp as auth_bp
    from elysium.bespoke.routes import bp as bespoke_bp
    from elysium.cart.routes import bp as cart_bp
    from elysium.checkout.routes import bp as checkout_bp
    from elysium.orders.routes import bp as orders_bp
    from elysium.quotes.routes import bp as quotes_bp
    from elysium.shop.routes import bp as shop_bp
    from elysium.site.routes import bp as site_bp
    from elysium.staff.routes import bp as staff_bp
    from elysium.webhooks.routes import bp as webhooks_bp
    from elysium.wishlist.routes import bp as wishlist_bp

    app.register_blueprint(shop_bp)
    app.register_blueprint(cart_bp)
    app.register_blueprint(checkout_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(account_bp)
    app.register_blueprint(wishlist_bp)
    app.register_blueprint(orders_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(site_bp)
    app.register_blueprint(staff_bp)
    app.register_blueprint(art_bp)
    app.register_blueprint(bespoke_bp)
    app.register_blueprint(quotes_bp)


def register_error_handlers(app: Flask) -> None:
    from elysium.errors import register

    register(app)


def register_commands(app: Flask) -> None:
    from elysium.cli import register

    register(app)
