"""A pooled PostgreSQL connection is checked as it is taken, without a round trip when that
proves nothing.

SQLAlchemy's ``pool_pre_ping`` sends ``SELECT 1`` every time a request takes a connection:
one more round trip on every page, to PostgreSQL on the same two cores, for the rare moment
the database has restarted. Instead:

- A connection back in the pool for less than ``PING_AFTER_IDLE_SECONDS`` is looked at
  locally: PostgreSQL says nothing on an idle connection unless it is ending it (a restart, a
  crash, ``pg_terminate_backend``: an error message, then the socket closes), so a socket with
  something to read, or closed, is pinged, and one with nothing to say is used as it is.
- A connection idle for longer is pinged as before: a firewall or a proxy may have dropped it
  without a word.

A ping that fails makes the pool open a new connection (and retire every older one) before
the request uses it, as ``pool_pre_ping`` did. A server that dies after the look and before
the statement fails that statement, as it could after a ping; the error retires the pool's
connections, and the shopper gets the "back in a moment" page (``elysium.errors``).
"""

from __future__ import annotations

import select
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.pool import ConnectionPoolEntry

PING_AFTER_IDLE_SECONDS = 10.0
_RETURNED_AT = "elysium.returned_at"


def check_connections_as_taken(engine: sa.Engine) -> None:
    """Check each PostgreSQL connection ``engine``'s pool hands out (see the module's
    docstring); an engine of any other database is left as it is."""
    if engine.dialect.name != "postgresql":
        return
    dialect = engine.dialect

    @sa.event.listens_for(engine, "checkin")
    def note_its_return(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if dbapi_connection is not None:
            record.info[_RETURNED_AT] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def check_it(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is None:
            return  # opened for this request: nothing can have happened to it yet
        idle = time.monotonic() - returned_at
        if idle < PING_AFTER_IDLE_SECONDS and not _server_spoke(dbapi_connection):
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if not dialect.is_disconnect(error, dbapi_connection, None):
                raise
            alive = False
        if not alive:
            raise exc.InvalidatePoolError("the database ended this pooled connection")


def _server_spoke(dbapi_connection: Any) -> bool:
    """Whether PostgreSQL has sent something (or closed the socket) since the connection's
    last answer: on an idle connection, only to say it is ending it."""
    if dbapi_connection.closed or dbapi_connection.broken:
        return True
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))
