"""Where a statement runs: reads from a PostgreSQL streaming replica, when
``DATABASE_REPLICA_URL`` is set, and a shop-window page's reads without a transaction.

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
- The replica answers, and is not far behind: when connecting to it fails, or a statement on
  it fails or gets no answer within ``DATABASE_REPLICA_TIMEOUT_SECONDS`` (a replica, or the
  network to it, that hangs; one that hasn't yet replayed a release's migration), that
  statement is read again from the primary, and so is every statement of this process for
  ``REPLICA_RETRY_SECONDS``. Once a second at most, a process asks whether the replica has
  replayed what the primary had written ``DATABASE_REPLICA_MAX_LAG_SECONDS`` ago; while it
  hasn't (its replay stopped, or it can't keep up), the primary serves. The choice is made at
  a request's first read, for all of them: a page that read the catalogue's version from the
  primary never reads the rest from a replica behind it (the other way round is harmless: a
  request whose replica failed reads what is left from the primary, which is ahead).

Who is signed in is always read from the primary (``web.sign_in.load_user``), so a session
ended a moment ago is over on every page, however far the replica lags.

Without ``DATABASE_REPLICA_URL`` there is no second engine and every statement goes to the
primary as before. A replica that lags (but answers) less than the bound still serves the
catalogue: shoppers who have not just changed something may see a price a moment old.

On PostgreSQL, the plain reads of every ``GET`` or ``HEAD`` that go to the primary (every
page but a shop-window one served by the replica: the bag, an order, the account, the back
office, who is signed in) run without a transaction: the same pooled connections, in
autocommit, so such a page costs no ``BEGIN`` and no ``ROLLBACK`` round trip. At read
committed, which the shop uses, every statement sees its own snapshot inside a transaction
too, so nothing a page reads changes. A write (a product page recording a first view, a
flush, a locking read) goes to the primary's transaction as always, and every statement after
it follows: a page that writes holds a second pooled connection for it, and one that only
reads (a product page seen again, the bag) costs no ``BEGIN`` and no ``COMMIT``. A change (any
other method) keeps its transaction from its first statement.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa
from flask import Flask, Response, current_app, has_app_context, has_request_context, request
from flask_sqlalchemy.session import Session
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.sql import CompoundSelect, Select
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.functions import FunctionElement

from elysium.config import ConfigurationError, cookie_name, normalise_database_url
from elysium.db_pool import check_connections_as_taken

logger = logging.getLogger(__name__)

EXTENSION = "elysium.replica"
WITHOUT_TRANSACTION = "elysium.reads_without_transaction"
READ_METHODS = frozenset({"GET", "HEAD"})
SAFE_METHODS = READ_METHODS | {"OPTIONS"}
# The shop window: the blueprints whose GET pages may read from the replica, and read without a
# transaction (None: no blueprint, e.g. a 404). A new blueprint reads from the primary, in a
# transaction, until it is added here.
SHOP_WINDOW_BLUEPRINTS = frozenset({None, "shop", "site", "art"})
PRIMARY_COOKIE = "elysium_primary"
# After the replica failed, this process reads from the primary this long.
REPLICA_RETRY_SECONDS = 10
# How often a process asks how far behind the replica is, at most.
LAG_CHECK_SECONDS = 1.0
# Functions that change something although they are called from a SELECT.
WRITING_FUNCTIONS = frozenset({"nextval", "setval"})
# Keys of the request's WSGI environ (not ``g``: a test may run several requests in one app
# context, and the decision is each request's own).
SHOP_WINDOW = "elysium.shop_window"
WROTE = "elysium.wrote"
FROM_REPLICA = "elysium.from_replica"


@dataclass
class Replica:
    """The replica's engine, until when this process leaves it alone, and how far behind it
    may be (``max_lag_seconds``, asked of it once a second at most)."""

    engine: sa.Engine
    cookie: str
    primary_seconds: int
    # The primary, asked where its WAL is: connections that wait a bounded time, as the
    # replica's, so a primary that hangs never holds a shop-window page the replica can serve.
    primary: sa.Engine | None = None
    max_lag_seconds: int = 10
    down_until: float = 0.0
    behind: bool = False
    checked_at: float = float("-inf")
    checking: threading.Lock = field(default_factory=threading.Lock)

    def answering(self) -> bool:
        return time.monotonic() >= self.down_until

    def mark_down(self, error: BaseException) -> None:
        if self.answering():
            logger.warning(
                "The read replica failed (%s: %s); reading from the primary for %s s",
                type(error).__name__,
                str(error).splitlines()[0][:200] if str(error) else "",
                REPLICA_RETRY_SECONDS,
            )
        self.down_until = time.monotonic() + REPLICA_RETRY_SECONDS

    def too_far_behind(self) -> bool:
        """Whether the replica has not replayed what the primary had written
        ``max_lag_seconds`` ago (:meth:`_replayed`): asked once a second at most (by one
        thread of the process; the others go by the last answer). A primary that can't say
        is asked again ``REPLICA_RETRY_SECONDS`` later, and the replica serves meanwhile,
        however far behind it was found: the primary could serve nothing either."""
        now = time.monotonic()
        if (
            self.primary is None
            or self.max_lag_seconds <= 0
            or now - self.checked_at < LAG_CHECK_SECONDS
        ):
            return self.behind
        if not self.checking.acquire(blocking=False):
            return self.behind
        try:
            self.checked_at = now
            try:
                with self.primary.connect() as connection:
                    position = connection.scalar(sa.text("SELECT pg_current_wal_lsn()::text"))
            except (DBAPIError, PoolTimeoutError) as error:
                logger.warning(
                    "Could not ask the primary how far the read replica is behind (%s)",
                    type(error).__name__,
                )
                self.checked_at = now + REPLICA_RETRY_SECONDS - LAG_CHECK_SECONDS
                # Whatever its lag, the replica is the shop window's best hope meanwhile: a
                # primary that can't say where its WAL is can't draw a page either.
                self.behind = False
                return self.behind
            behind = not self._replayed(str(position))
            if behind and not self.behind:
                logger.warning(
                    "The read replica has not replayed what the primary wrote %s s ago; "
                    "reading from the primary until it has",
                    self.max_lag_seconds,
                )
            self.behind = behind
        except (DBAPIError, PoolTimeoutError) as error:
            self.mark_down(error)
        finally:
            self.checking.release()
        return self.behind

    def _replayed(self, position: str) -> bool:
        """Whether the replica has replayed what the primary had written ``max_lag_seconds``
        ago: all of its WAL up to ``position`` (where it is now: an idle primary's replica
        has), or a transaction committed since then (the WAL is replayed in order, so
        everything before it is replayed too). A replica a moment behind a busy primary is
        never taken for one far behind, whenever it was last asked."""
        with self.engine.connect() as connection:
            replayed = connection.scalar(
                sa.text(
                    "SELECT pg_last_wal_replay_lsn() >= CAST(:position AS pg_lsn) "
                    "OR pg_last_xact_replay_timestamp() >= now() - make_interval(secs => :lag)"
                ),
                {"position": position, "lag": self.max_lag_seconds},
            )
        return replayed is not False


class _AnswersInTime(psycopg.Connection):
    """A connection to the replica that waits ``answer_within`` seconds at most for any
    answer: a replica (or the network to it) that hangs fails the statement, which the
    primary then serves, where libpq alone would wait for ever. The connection is closed, so
    the pool never hands it out again."""

    answer_within: float = 2.0

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        try:
            return super().wait(gen, interval=interval, timeout=timeout or self.answer_within)
        except psycopg.errors._WaitTimeout:  # what wait() raises when time is up
            self.close()
            raise psycopg.OperationalError(
                f"the read replica gave no answer within {self.answer_within} s"
            ) from None


class RoutingSession(Session):
    """``db.session``: Flask-SQLAlchemy's session, which sends plain reads of a shop-window
    ``GET`` to the replica when there is one (see the module's docstring)."""

    def __init__(self, db: Any, **kwargs: Any) -> None:
        super().__init__(db, **kwargs)
        extensions = current_app.extensions if has_app_context() else {}
        self._replica: Replica | None = extensions.get(EXTENSION)
        self._without_transaction: sa.Engine | None = extensions.get(WITHOUT_TRANSACTION)
        self._on_replica = False  # whether the statement being run was sent to the replica

    def _execute_internal(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        """Every statement (``execute``, ``scalar``, ``scalars``, ``get``, a lazy load): one
        that failed on the replica is read again from the primary, as is the rest of the
        request, and the process leaves the replica alone a while (``Replica.mark_down``)."""
        self._on_replica = False
        try:
            return super()._execute_internal(statement, params, **kwargs)
        except DBAPIError as error:
            if not self._on_replica or self._replica is None:
                raise
            self._replica.mark_down(error)
            request.environ[FROM_REPLICA] = False
            self._on_replica = False
            return super()._execute_internal(statement, params, **kwargs)

    def get_bind(
        self,
        mapper: Any | None = None,
        clause: Any | None = None,
        bind: sa.Engine | sa.Connection | None = None,
        primary: bool = False,
        **kwargs: Any,
    ) -> sa.Engine | sa.Connection:
        """Where a statement runs; ``bind_arguments={"primary": True}`` keeps a read off the
        replica (who is signed in)."""
        if bind is None and has_request_context():
            target = self._read_target(clause, primary)
            if target is not None:
                return target
        return super().get_bind(mapper=mapper, clause=clause, bind=bind, **kwargs)

    def _read_target(self, clause: Any, primary: bool) -> sa.Engine | None:
        """For a plain read of a ``GET`` or ``HEAD``: the replica for a shop-window page, or
        else the primary without a transaction; None for the primary's transaction."""
        replica = self._replica
        without = self._without_transaction
        if (replica is None and without is None) or request.method not in READ_METHODS:
            return None  # nothing to choose from: the statement needn't be looked at
        if _streamed(clause):
            return None  # a server-side cursor (a CSV export's) lives in a transaction
        if not self._plain_read_before_any_write(clause):
            return None
        if not primary and replica is not None and _shop_window() and self._from_replica(replica):
            self._on_replica = True
            return replica.engine
        return without

    def _from_replica(self, replica: Replica) -> bool:
        """Whether this request's catalogue reads go to the replica: decided at its first, for
        all of them. A request whose first read went to the primary (the replica down) must
        not read the rest from a replica that answers again meanwhile: what it keeps under the
        version it read from the primary would be older than that version."""
        environ = request.environ
        chosen = environ.get(FROM_REPLICA)
        if chosen is None:
            chosen = environ[FROM_REPLICA] = self._replica_serves(replica)
        return chosen

    def _replica_serves(self, replica: Replica) -> bool:
        if not replica.answering() or replica.cookie in request.cookies:
            return False
        if replica.too_far_behind():
            return False
        try:
            # Connect now, so a replica that doesn't answer costs this statement nothing.
            self.connection(bind_arguments={"bind": replica.engine})
        except (DBAPIError, PoolTimeoutError) as error:
            replica.mark_down(error)
            return False
        return True

    def _plain_read_before_any_write(self, clause: Any) -> bool:
        """A plain read while the request has written nothing yet; a write is noted."""
        environ = request.environ
        if self._flushing or (clause is not None and not plain_read(clause)):
            environ[WROTE] = True
            return False
        return clause is not None and not environ.get(WROTE)


def _shop_window() -> bool:
    """Whether this request is a shop-window ``GET`` or ``HEAD`` (worked out once per
    request)."""
    environ = request.environ
    found = environ.get(SHOP_WINDOW)
    if found is None:
        window = request.method in READ_METHODS and _top_blueprint() in SHOP_WINDOW_BLUEPRINTS
        found = environ[SHOP_WINDOW] = window
    return found


def _streamed(clause: Any) -> bool:
    """Whether ``clause`` asks to be read in batches through a server-side cursor. Only the
    statement's own options are seen here: give ``yield_per`` to the statement (as the CSV
    export does), not to ``execute()``."""
    options = clause.get_execution_options() if isinstance(clause, Executable) else {}
    return bool(options.get("yield_per") or options.get("stream_results"))


def plain_read(clause: Any) -> bool:
    """Whether ``clause`` only reads: a ``SELECT`` (or a UNION of them) without ``FOR UPDATE``
    and without a locking or sequence function among its columns."""
    if isinstance(clause, CompoundSelect):
        return all(plain_read(select) for select in clause.selects)
    if not isinstance(clause, Select) or clause._for_update_arg is not None:
        return False
    # The columns as the statement was given them (a piece, a function, a label of one), not
    # ``selected_columns``: for a select of an entity that spells out each of its columns,
    # which cost most of a millisecond on a page of several statements.
    for column in clause._raw_columns:
        called = getattr(column, "element", column)
        if isinstance(called, FunctionElement):
            name = str(getattr(called, "name", "")).lower()
            if "advisory" in name or name in WRITING_FUNCTIONS:
                return False
    return True


def _top_blueprint() -> str | None:
    names = request.blueprints
    return names[-1] if names else None


def init_app(app: Flask) -> None:
    """On PostgreSQL, the primary's engine for reads without a transaction (the same pool);
    the replica's engine when ``DATABASE_REPLICA_URL`` is set."""
    with app.app_context():
        primary: sa.Engine = app.extensions["sqlalchemy"].engine
    if primary.dialect.name == "postgresql":
        app.extensions[WITHOUT_TRANSACTION] = primary.execution_options(
            isolation_level="AUTOCOMMIT"
        )
    url = app.config.get("DATABASE_REPLICA_URL")
    if not url:
        return
    url = normalise_database_url(url)
    if not url.startswith("postgresql"):
        raise ConfigurationError(
            "DATABASE_REPLICA_URL must be a postgresql:// URL: a streaming replica of the "
            "PostgreSQL database at DATABASE_URL."
        )
    options = app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {})
    answer_within = float(app.config.get("DATABASE_REPLICA_TIMEOUT_SECONDS", 2))
    max_lag = int(app.config.get("DATABASE_REPLICA_MAX_LAG_SECONDS", 10))
    primary_seconds = int(app.config.get("DATABASE_PRIMARY_AFTER_WRITE_SECONDS", 5))
    if max_lag > 0:
        # The replica serves while it is up to ``max_lag`` behind (found so once a second at
        # most): a browser that wrote reads from the primary at least that long, or what it
        # just did could be missing from its next page.
        primary_seconds = max(primary_seconds, math.ceil(max_lag + LAG_CHECK_SECONDS))
    replica = Replica(
        engine=_answering_in_time(sa.create_engine(url, **options), answer_within),
        cookie=cookie_name(PRIMARY_COOKIE, secure=app.config["SESSION_COOKIE_SECURE"]),
        primary_seconds=primary_seconds,
        primary=(
            _answering_in_time(sa.create_engine(primary.url, **options), answer_within)
            if max_lag > 0
            else None
        ),
        max_lag_seconds=max_lag,
    )

    check_connections_as_taken(replica.engine)

    @sa.event.listens_for(replica.engine, "handle_error")
    def lost_the_replica(context: sa.engine.ExceptionContext) -> None:
        if context.is_disconnect:
            replica.mark_down(context.original_exception)

    app.extensions[EXTENSION] = replica
    app.after_request(read_from_the_primary_next)


def replica_state() -> str | None:
    """The read replica as this process last found it ("ok", "failing" or "behind"), or None
    without one: for ``/healthz``, asking nothing of it."""
    replica: Replica | None = current_app.extensions.get(EXTENSION)
    if replica is None:
        return None
    if not replica.answering():
        return "failing"
    return "behind" if replica.behind else "ok"


def _answering_in_time(engine: sa.Engine, seconds: float) -> sa.Engine:
    """``engine``, its connections waiting ``seconds`` at most for any answer."""

    @sa.event.listens_for(engine, "do_connect")
    def connect(_dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        connection = _AnswersInTime.connect(*cargs, **cparams)
        connection.answer_within = seconds
        return connection

    return engine


def read_from_the_primary_next(response: Response) -> Response:
    """After a request that changed something: this browser reads from the primary for a few
    seconds. A product page's view record doesn't count (every browsing shopper would)."""
    replica: Replica = current_app.extensions[EXTENSION]
    changed = request.method not in SAFE_METHODS or (
        request.environ.get(WROTE) and _top_blueprint() not in SHOP_WINDOW_BLUEPRINTS
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
