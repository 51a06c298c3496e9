"""Serve :class:`FakeStripe` on a loopback port in a background thread.

``with FakeStripeServer(webhook_url=..., webhook_secret=...) as server:`` starts it on a free
port of 127.0.0.1; ``server.base_url`` is what the stripe library's API base should be.
Unknown attributes are the app's (``server.fail_next(...)``, ``server.pay(...)``, ...).
``down()``/``up()`` make the API unreachable and reachable again; webhooks keep flowing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import FakeStripe


class _Handler(WSGIRequestHandler):
    """Tracks its connection so the server can cut it (``down()``/``stop()``)."""

    quiet = True

    def setup(self) -> None:
        super().setup()
        owner: FakeStripeServer | None = getattr(self.server, "fake_owner", None)
        if owner is not None:
            owner._track(self.connection, threading.current_thread())

    def finish(self) -> None:
        owner: FakeStripeServer | None = getattr(self.server, "fake_owner", None)
        if owner is not None:
            owner._untrack(self.connection)
        super().finish()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.quiet:
            super().log_request(code, size)


_OWN = frozenset({"app", "host", "port"})


class FakeStripeServer:
    """The fake Stripe on ``host:port`` (port 0: a free one, kept across ``down()``/``up()``).

    Keyword arguments not named here configure the :class:`FakeStripe` app (webhook_url,
    webhook_secret, webhook_transport, auto_deliver, enabled_events, clock, ...)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        app: FakeStripe | None = None,
        quiet: bool = True,
        **app_options: Any,
    ) -> None:
        if app is not None and app_options:
            raise TypeError("pass either app or app options, not both")
        self.app = app if app is not None else FakeStripe(**app_options)
        self.host = host
        self.port = port
        self._handler = type("Handler", (_Handler,), {"quiet": quiet})
        self._httpd: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._conn_lock = threading.Lock()

    # The app's hooks (fail_next, hang_next, pay, deliver, ...) are reachable on the server.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # Settings such as webhook_url, webhook_secret or auto_deliver belong to the app.
        if not name.startswith("_") and name not in _OWN and hasattr(self.app, name):
            setattr(self.app, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> FakeStripeServer:
        if self._httpd is not None:
            return self
        self.app._release.clear()
        httpd = make_server(
            self.host, self.port, self.app, threaded=True, request_handler=self._handler
        )
        httpd.fake_owner = self  # type: ignore[attr-defined]
        self.port = httpd.server_port
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-stripe-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, cut open connections, end hangs, and wait for the threads."""
        self.app.release_hangs()
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        with self._conn_lock:
            connections = dict(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for handler_thread in connections.values():
            handler_thread.join(timeout=5)

    def down(self) -> None:
        """Stripe is unreachable: new connections are refused, open ones are cut."""
        self.stop()

    def up(self) -> None:
        """Listen again, on the same port."""
        self.start()

    def __enter__(self) -> FakeStripeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Webhooks still on their way are attempted first (their receiver may call the API
        # back), so that no delivery thread outlives the server.
        try:
            self.app.wait_for_deliveries(timeout=self.app.webhook_timeout + 5)
        except TimeoutError:
            pass
        finally:
            self.stop()

    def _track(self, connection: socket.socket, thread: threading.Thread) -> None:
        with self._conn_lock:
            self._connections[connection] = thread

    def _untrack(self, connection: socket.socket) -> None:
        with self._conn_lock:
            self._connections.pop(connection, None)
