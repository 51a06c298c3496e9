"""Serve :class:`FakeSanity` on a loopback port in a background thread.

``with FakeSanityServer() as sanity:`` starts it on a free port of 127.0.0.1;
``sanity.base_url`` is what ``SANITY_API_HOST`` should be. Unknown attributes are the app's
(``sanity.edit(...)``, ``sanity.fail_next(...)``, ``sanity.deliver_webhook(...)``, ...).
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import FakeSanity


class _QuietHandler(WSGIRequestHandler):
    quiet = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.quiet:
            super().log_request(code, size)


class FakeSanityServer:
    """The stand-in on ``host:port`` (port 0: a free one). Keyword arguments not named here
    configure the :class:`FakeSanity` app (project_id, dataset, documents, token,
    webhook_url, webhook_secret)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        app: FakeSanity | None = None,
        quiet: bool = True,
        **app_options: Any,
    ) -> None:
        if app is not None and app_options:
            raise TypeError("pass either app or app options, not both")
        self.app = app if app is not None else FakeSanity(**app_options)
        self.host = host
        self.port = port
        self._handler = type("Handler", (_QuietHandler,), {"quiet": quiet})
        self._httpd: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def settings(self) -> dict[str, Any]:
        """The shop's settings that point it at this stand-in."""
        return {
            "SANITY_PROJECT_ID": self.app.project_id,
            "SANITY_DATASET": self.app.dataset,
            "SANITY_API_HOST": self.base_url,
            "SANITY_WEBHOOK_SECRET": self.app.webhook_secret,
        }

    def start(self) -> FakeSanityServer:
        if self._httpd is not None:
            return self
        self.app._release.clear()
        httpd = make_server(
            self.host, self.port, self.app, threaded=True, request_handler=self._handler
        )
        self.port = httpd.server_port
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-sanity-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, end hangs, and wait for the thread."""
        self.app.release_hangs()
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeSanityServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
