"""Reads from a PostgreSQL streaming replica, when ``DATABASE_REPLICA_URL`` is set.

Only the catalogue reads from the replica, and only where a moment's lag can't mislead
anyone: a statement goes to the replica when all of these hold, else to the primary.

- It runs while a ``GET`` or ``HEAD`` request is answered (never in a command, a worker or a
  webhook), for a page of the shop window (the ``shop``, ``site`` and ``art`` pages, or one
  of no blueprint such as a 404). The pages that are one person's own (bag, checkout, order,
  account, wishlist, bespoke, sign-in, staff) always read from the primary: they are cheap,
  and the order page a shopper comes back to from Stripe must show what the webhook wrote.
- The browser did not change anything in the last ``DATABASE_PRIMARY_AFTER_WRITE_SECONDS``:
  after any other request (a form POST, an htmx POST, whether it succeeded or not), and after
  a personal page's ``GET`` that wrote (signing in with Google), the response sets a short
  cookie, and while the browser sends it every read goes to the primary. So a shopper always
  sees what they just did. It needs no signature: a forged one only sends reads to the primary.
- The statement is a plain ``SELECT``: not an ``INSERT``, ``UPDATE`` or ``DELETE``, not
  ``FOR UPDATE``, not textual SQL, not a flush, and it calls no function in its columns that
  takes an advisory lock or moves a sequence.
- This request has written nothing yet: once it has (a product page records the view), every
  statement after it reads from the primary, which holds what it wrote.
- The replica answered: when connecting to it fails, the statement reads from the primary,
  and so does every request of this process for ``REPLICA_RETRY_SECONDS``.

Who is signed in is always read from the primary (``web.sign_in.load_user``), so a session
ended a moment ago is over on every page, however far the replica lags.

Without ``DATABASE_REPLICA_URL`` there is no second engine and every statement goes to the
primary as before. A replica that lags (but answers) still serves the catalogue: shoppers who
have not just changed something may see a price a moment old.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, current_app, has_app_context, has_request_context, request
from flask_sqlalchemy.session import Session
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.sql import CompoundSelect, Select

from elysium.config import ConfigurationError, cookie_name, normalise_database_url

logger = logging.getLogger(__name__)

EXTENSION = "elysium.replica"
READ_METHODS = frozenset({"GET", "HEAD"})
SAFE_METHODS = READ_METHODS | {"OPTIONS"}
# The blueprints whose GET pages may read from the replica (None: no blueprint, e.g. a 404).
# A new blueprint reads from the primary until it is added here.
REPLICA_BLUEPRINTS = frozenset({None, "shop", "site", "art"})
PRIMARY_COOKIE = "elysium_primary"
# After connecting to the replica fails, this process reads from the primary this long.
REPLICA_RETRY_SECONDS = 10
# Functions that change something although they are called from a SELECT.
WRITING_FUNCTIONS = frozenset({"nextval", "setval"})
# Keys of the request's WSGI environ (not ``g``: a test may run several requests in one app
# context, and the decision is each request's own).
READS_FROM_REPLICA = "elysium.reads_from_replica"
WROTE = "elysium.wrote"


@dataclass
class Replica:
    """The replica's engine, and until when this process leaves it alone."""

    engine: sa.Engine
    cookie: str
    primary_seconds: int
    down_until: float = 0.0

    def answering(self) -> bool:
        return time.monotonic() >= self.down_until

    def mark_down(self, error: BaseException) -> None:
        if self.answering():
            logger.warning(
                "The read replica is unreachable (%s); reading from the primary for %s s",
                type(error).__name__,
                REPLICA_RETRY_SECONDS,
            )
        self.down_until = time.monotonic() + REPLICA_RETRY_SECONDS


class RoutingSession(Session):
    """``db.session``: Flask-SQLAlchemy's session, which sends plain reads of a shop-window
    ``GET`` to the replica when there is one (see the module's docstring)."""

    def __init__(self, db: Any, **kwargs: Any) -> None:
        super().__init__(db, **kwargs)
        self._replica: Replica | None = (
            current_app.extensions.get(EXTENSION) if has_app_context() else None
        )

    def get_bind(
        self,
        mapper: Any | None = None,
        clause: Any | None = None,
        bind: sa.Engine | sa.Connection | None = None,
        **kwargs: Any,
    ) -> sa.Engine | sa.Connection:
        replica = self._replica
        if replica is not None and bind is None and self._reads_from_replica(clause, replica):
            try:
                # Connect now, so a replica that doesn't answer costs this statement nothing.
                self.connection(bind_arguments={"bind": replica.engine})
            except (DBAPIError, PoolTimeoutError) as error:
                replica.mark_down(error)
            else:
                return replica.engine
        return super().get_bind(mapper=mapper, clause=clause, bind=bind, **kwargs)

    def _reads_from_replica(self, clause: Any, replica: Replica) -> bool:
        if not has_request_context():
            return False
        environ = request.environ
        if self._flushing or (clause is not None and not plain_read(clause)):
            environ[WROTE] = True
            return False
        if clause is None or environ.get(WROTE) or not replica.answering():
            return False
        allowed = environ.get(READS_FROM_REPLICA)
        if allowed is None:
            allowed = environ[READS_FROM_REPLICA] = request_reads_from_replica(replica)
        return allowed


def plain_read(clause: Any) -> bool:
    """Whether ``clause`` only reads: a ``SELECT`` (or a UNION of them) without ``FOR UPDATE``
    and without a locking or sequence function among its columns."""
    if isinstance(clause, CompoundSelect):
        return all(plain_read(select) for select in clause.selects)
    if not isinstance(clause, Select) or clause._for_update_arg is not None:
        return False
    for column in clause.selected_columns:
        name = str(getattr(getattr(column, "element", column), "name", "") or "").lower()
        if "advisory" in name or name in WRITING_FUNCTIONS:
            return False
    return True


def request_reads_from_replica(replica: Replica) -> bool:
    """Whether this request's plain reads may come from the replica."""
    return (
        request.method in READ_METHODS
        and replica.cookie not in request.cookies
        and _top_blueprint() in REPLICA_BLUEPRINTS
    )


def _top_blueprint() -> str | None:
    names = request.blueprints
    return names[-1] if names else None


def init_app(app: Flask) -> None:
    """Open the replica's engine when ``DATABASE_REPLICA_URL`` is set; nothing otherwise."""
    url = app.config.get("DATABASE_REPLICA_URL")
    if not url:
        return
    url = normalise_database_url(url)
    if not url.startswith("postgresql"):
        raise ConfigurationError(
            "DATABASE_REPLICA_URL must be a postgresql:// URL: a streaming replica of the "
            "PostgreSQL database at DATABASE_URL."
        )
    replica = Replica(
        engine=sa.create_engine(url, **app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {})),
        cookie=cookie_name(PRIMARY_COOKIE, secure=app.config["SESSION_COOKIE_SECURE"]),
        primary_seconds=int(app.config.get("DATABASE_PRIMARY_AFTER_WRITE_SECONDS", 5)),
    )

    @sa.event.listens_for(replica.engine, "handle_error")
    def lost_the_replica(context: sa.engine.ExceptionContext) -> None:
        if context.is_disconnect:
            replica.mark_down(context.original_exception)

    app.extensions[EXTENSION] = replica
    app.after_request(read_from_the_primary_next)


def read_from_the_primary_next(response: Response) -> Response:
    """After a request that changed something: this browser reads from the primary for a few
    seconds. A product page's view record doesn't count (every browsing shopper would)."""
    replica: Replica = current_app.extensions[EXTENSION]
    changed = request.method not in SAFE_METHODS or (
        request.environ.get(WROTE) and _top_blueprint() not in REPLICA_BLUEPRINTS
    )
    if changed and replica.primary_seconds > 0:
        response.set_cookie(
            replica.cookie,
            "1",
            max_age=replica.primary_seconds,
            path="/",
            secure=current_app.config["SESSION_COOKIE_SECURE"],
            httponly=True,
            samesite="Lax",
        )
    return response
