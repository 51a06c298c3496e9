"""A local HTTP server that answers like Resend's ``POST /emails``.

Tests point ``RESEND_BASE_URL`` at it, choose how it answers (``succeed``, ``fail_with``,
``hang``), and read back every request it received. Like Resend, it answers a repeated
``Idempotency-Key`` with the id of the email it already accepted, without "sending" again.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("Idempotency-Key")


@dataclass
class _Behaviour:
    status: int = 200
    body: dict[str, Any] | None = None
    hang_seconds: float = 0.0
    delay_seconds: float = 0.0


@dataclass
class FakeResend:
    """The server's state; every method is safe to call from the test while it runs."""

    api_key: str = "re_test_key"
    requests: list[RecordedRequest] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)
    url: str = ""
    _behaviour: _Behaviour = field(default_factory=_Behaviour)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def succeed(self, *, delay_seconds: float = 0.0) -> None:
        """Answer 200 with a new email id (after ``delay_seconds``, to make senders overlap)."""
        self._behaviour = _Behaviour(delay_seconds=delay_seconds)

    def fail_with(self, status: int, name: str = "", message: str = "") -> None:
        """Answer every request with ``status`` and a Resend-style error body."""
        body = {"statusCode": status, "name": name or "error", "message": message or "nope"}
        self._behaviour = _Behaviour(status=status, body=body)

    def hang(self, seconds: float = 5.0) -> None:
        """Accept the connection but answer nothing for ``seconds`` (or until stopped)."""
        self._behaviour = _Behaviour(hang_seconds=seconds)

    def release(self) -> None:
        """Answer the requests ``hang`` holds now (as it is set to), and any later ones at once."""
        self._release.set()

    @property
    def emails_sent(self) -> int:
        """Emails this "provider" actually accepted (repeats with a known key not counted)."""
        return len(self.accepted)

    def keys(self) -> list[str | None]:
        return [request.idempotency_key for request in self.requests]

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            body = json.loads(request.get_data(as_text=True) or "null")
        except ValueError:
            body = None
        recorded = RecordedRequest(request.method, request.path, dict(request.headers), body)
        with self._lock:
            self.requests.append(recorded)
            behaviour = self._behaviour
        response = self._answer(request, recorded, behaviour)
        return response(environ, start_response)

    def _answer(
        self, request: Request, recorded: RecordedRequest, behaviour: _Behaviour
    ) -> Response:
        if behaviour.hang_seconds:
            self._release.wait(behaviour.hang_seconds)
        if behaviour.delay_seconds:
            time.sleep(behaviour.delay_seconds)
        if request.method != "POST" or request.path != "/emails":
            return _json({"statusCode": 404, "name": "not_found", "message": "Not found"}, 404)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _json(
                {"statusCode": 401, "name": "missing_api_key", "message": "Missing API key"}, 401
            )
        if behaviour.status != 200:
            return _json(behaviour.body, behaviour.status)
        body = recorded.json
        if not isinstance(body, dict) or not all(body.get(k) for k in ("from", "to", "subject")):
            return _json(
                {"statusCode": 422, "name": "validation_error", "message": "Missing field"}, 422
            )
        key = recorded.idempotency_key
        with self._lock:
            if key and key in self.accepted:
                return _json({"id": self.accepted[key]}, 200)
            email_id = f"fake-{next(self._ids):04d}"
            self.accepted[key or email_id] = email_id
        return _json({"id": email_id}, 200)


def _json(body: Any, status: int) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


@contextmanager
def running_fake_resend() -> Iterator[FakeResend]:
    """Serve a :class:`FakeResend` on 127.0.0.1 (a free port) in a thread."""
    fake = FakeResend()
    server: BaseWSGIServer = make_server("127.0.0.1", 0, fake.wsgi, threaded=True)
    fake.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-resend", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        fake._release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
