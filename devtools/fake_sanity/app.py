"""The stand-in's WSGI app: Sanity's query API for the shop's two query shapes, plus test hooks.

It does not parse GROQ: a query with ``$type`` (and ``$lastId``, ``$limit``) is a page of
published documents of that type, ordered by ``_id`` after ``$lastId``; a query with ``$id`` is
one published document or ``null``. Drafts (``drafts.`` ids) are kept but never answered.

Test hooks (thread-safe): :meth:`put`, :meth:`edit`, :meth:`delete`, :meth:`add_draft`,
:meth:`add_malformed`; :meth:`fail_next` (429 with Retry-After, or 5xx), :meth:`hang_next`
(sleep past the client's timeout), :meth:`trickle_next` (an answer that keeps coming, slowly),
:attr:`requests` / :attr:`request_count`; :meth:`deliver_webhook` posts a correctly signed
webhook like Sanity's. Answers are gzipped for a client that accepts it, as Sanity's are.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import hmac
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
from werkzeug.wrappers import Request, Response

from .dataset import DATASET, PROJECT_ID, demo_documents, revision, updated_now

DRAFT_PREFIX = "drafts."
QUERY_PATH = re.compile(r"^/(?P<version>v\d{4}-\d{2}-\d{2}|v1|vX)/data/query/(?P<dataset>[^/]+)$")
CONTROL_PATH = re.compile(r"^/_fake/documents/(?P<doc_id>[^/]+)$")
DEFAULT_WEBHOOK_SECRET = "sanity-fake-webhook-secret"  # noqa: S105  (the demo's, not a real one)


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SeenRequest:
    """One request as the stand-in saw it."""

    method: str
    path: str
    params: dict[str, Any]  # the $-parameters, JSON-decoded (without the $)
    query: str
    authorization: str | None
    status: int = 0


def sign(body: bytes, secret: str, timestamp_ms: int | None = None) -> str:
    """A ``sanity-webhook-signature`` header value, as Sanity's toolkit makes it."""
    stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).digest()
    return f"t={stamp},v1={base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


class FakeSanity:
    """A Sanity project with one dataset, in memory."""

    def __init__(
        self,
        *,
        project_id: str = PROJECT_ID,
        dataset: str = DATASET,
        documents: list[dict[str, Any]] | None = None,
        token: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
    ) -> None:
        self.project_id = project_id
        self.dataset = dataset
        self.token = token  # when set, a query without "Authorization: Bearer <token>" is a 401
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self._lock = threading.RLock()
        docs = demo_documents(project_id, dataset) if documents is None else documents
        self.documents: dict[str, dict[str, Any]] = {d["_id"]: copy.deepcopy(d) for d in docs}
        self._initial = set(self.documents)
        self._deleted_types: dict[str, str] = {}
        self._faults: deque[Fault] = deque()
        self._hangs: deque[float] = deque()
        self._trickles: deque[float] = deque()
        self._release = threading.Event()
        self.requests: list[SeenRequest] = []
        # When set, a page holds at most this many documents, whatever ``$limit`` asks (a
        # server that answers a page short of its slice before the listing's end).
        self.most_per_page: int | None = None
        # What ``_updatedAt`` an edit gets: Sanity's clock, to the second (a test may stop it,
        # to publish twice within one second).
        self.clock: Callable[[], str] = updated_now

    # -- content ---------------------------------------------------------------------------
    def get(self, doc_id: str) -> dict[str, Any] | None:
        with self._lock:
            doc = self.documents.get(doc_id)
            return copy.deepcopy(doc) if doc is not None else None

    def put(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Add or replace a document as it is (no checks: malformed content is allowed)."""
        doc = copy.deepcopy(doc)
        doc["_updatedAt"] = self.clock()
        doc["_rev"] = revision(doc)
        with self._lock:
            self.documents[doc["_id"]] = doc
            self._deleted_types.pop(doc["_id"], None)
        return copy.deepcopy(doc)

    def edit(self, doc_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a document (``title="..."``, ``basePrice=...``) and publish it."""
        with self._lock:
            doc = copy.deepcopy(self.documents[doc_id])
            doc.update(fields)
            return self.put(doc)

    def delete(self, doc_id: str) -> None:
        with self._lock:
            doc = self.documents.pop(doc_id)
            self._deleted_types[doc_id] = doc.get("_type", "")

    def add_draft(self, doc_id: str, **fields: Any) -> dict[str, Any]:
        """A draft (``drafts.<doc_id>``) of a document with ``fields`` changed; never served."""
        with self._lock:
            base = copy.deepcopy(self.documents.get(doc_id, {"_type": _type_of(doc_id)}))
            base.update(fields)
            base["_id"] = DRAFT_PREFIX + doc_id
            return self.put(base)

    def add_malformed(self, doc_id: str = "product-malformed", **fields: Any) -> dict[str, Any]:
        """A product a careless edit could make: a price as text, no title, an unknown metal."""
        doc: dict[str, Any] = {
            "_id": doc_id,
            "_type": "product",
            "slug": doc_id.removeprefix("product-"),
            "published": True,
            "category": "ring",
            "collection": None,
            "description": "",
            "details": [],
            "basePrice": "1250.00",
            "currency": "GBP",
            "engravingFee": None,
            "leadTimeWeeks": None,
            "featuredRank": None,
            "releasedAt": "2025-01-01",
            "metals": [{"code": "unobtainium", "label": "?", "priceDelta": 0}],
            "diamonds": [],
            "images": [],
            "seo": None,
        }
        doc.update(fields)
        return self.put(doc)

    # -- faults ----------------------------------------------------------------------------
    def fail_next(
        self, count: int = 1, status: int = 500, retry_after: float | None = None
    ) -> None:
        """The next ``count`` queries get ``status`` (429 with ``Retry-After`` if given)."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        with self._lock:
            self._faults.extend(Fault(status, headers) for _ in range(count))

    def hang_next(self, count: int = 1, seconds: float = 30.0) -> None:
        """The next ``count`` queries sleep ``seconds`` before answering (or until released)."""
        with self._lock:
            self._hangs.extend(seconds for _ in range(count))

    def trickle_next(self, count: int = 1, seconds: float = 10.0) -> None:
        """The next ``count`` answers come a little at a time, spread over ``seconds`` (a proxy
        or an edge under strain): each piece well within any read timeout, the whole answer
        late. Released, like a hang, when the server stops."""
        with self._lock:
            self._trickles.extend(seconds for _ in range(count))

    def release_hangs(self) -> None:
        self._release.set()

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def query_requests(self) -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v")]

    # -- webhooks --------------------------------------------------------------------------
    def webhook_body(self, doc_id: str, deleted: bool = False) -> bytes:
        with self._lock:
            doc = self.documents.get(doc_id)
            doc_type = (
                doc.get("_type")
                if doc is not None
                else self._deleted_types.get(doc_id, _type_of(doc_id))
            )
            created = doc_id not in self._initial
            operation = "delete" if deleted else ("create" if created else "update")
        return json.dumps({"_id": doc_id, "_type": doc_type, "operation": operation}).encode()

    def deliver_webhook(
        self,
        url: str | None = None,
        doc_id: str = "",
        deleted: bool = False,
        *,
        secret: str | None = None,
        timeout: float = 10.0,
    ) -> int:
        """POST a correctly signed webhook for ``doc_id`` to ``url``; the answer's status."""
        target = url or self.webhook_url
        if not target:
            raise ValueError("no webhook URL")
        body = self.webhook_body(doc_id, deleted)
        response = requests.post(
            target,
            data=body,
            timeout=timeout,
            headers={
                "Content-Type": "application/json",
                "sanity-webhook-signature": sign(body, secret or self.webhook_secret),
                "sanity-operation": json.loads(body)["operation"],
                "sanity-document-id": doc_id,
                "sanity-project-id": self.project_id,
                "sanity-dataset": self.dataset,
            },
        )
        return response.status_code

    # -- WSGI ------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._answer(request)
        return response(environ, start_response)

    def _answer(self, request: Request) -> Response:
        control = CONTROL_PATH.match(request.path)
        if control:
            return self._control(request, control.group("doc_id"))
        seen = SeenRequest(
            request.method,
            request.path,
            {},
            request.args.get("query", ""),
            request.headers.get("Authorization"),
        )
        with self._lock:
            self.requests.append(seen)
            hang = self._hangs.popleft() if self._hangs else 0.0
            fault = self._faults.popleft() if self._faults else None
            trickle = self._trickles.popleft() if self._trickles else 0.0
        if hang:
            self._release.wait(hang)
        response = self._query(request, seen, fault)
        seen.status = response.status_code
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.set_data(gzip.compress(response.get_data()))
            response.headers["Content-Encoding"] = "gzip"
        if trickle:
            body = response.get_data()
            response.response = self._trickled(body, trickle)
            response.content_length = len(body)
            response.direct_passthrough = True
        return response

    def _trickled(self, body: bytes, seconds: float) -> Iterator[bytes]:
        pieces = max(1, min(len(body), int(seconds / 0.1)))
        size = -(-len(body) // pieces)
        for start in range(0, len(body), size):
            if self._release.wait(seconds / pieces):
                return
            yield body[start : start + size]

    def _query(self, request: Request, seen: SeenRequest, fault: Fault | None) -> Response:
        if fault is not None:
            message = "Too many requests" if fault.status == 429 else "Internal server error"
            response = _error(fault.status, message)
            response.headers.update(fault.headers)
            return response
        match = QUERY_PATH.match(request.path)
        if request.method != "GET" or not match:
            return _error(404, "Not found")
        if match.group("dataset") != self.dataset:
            return _error(404, f"Dataset {match.group('dataset')!r} not found")
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "Session not found")
        groq = request.args.get("query")
        if not groq:
            return _error(400, "Missing query")
        try:
            params = {k[1:]: json.loads(v) for k, v in request.args.items() if k.startswith("$")}
        except ValueError:
            return _error(400, "Parameter values must be JSON")
        seen.params = params
        started = time.perf_counter()
        with self._lock:
            if "type" in params:
                result: Any = self._page(params)
            elif "id" in params:
                doc = self.documents.get(str(params["id"]))
                result = None if doc is None or doc["_id"].startswith(DRAFT_PREFIX) else doc
            else:
                return _error(400, "The stand-in only answers the shop's two query shapes")
            body = json.dumps(
                {"query": groq, "result": result, "ms": int((time.perf_counter() - started) * 1000)}
            )
        return Response(body, 200, content_type="application/json; charset=utf-8")

    def _page(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        doc_type = params.get("type")
        last_id = str(params.get("lastId") or "")
        limit = int(params.get("limit") or 0)
        found = sorted(
            (
                d
                for d in self.documents.values()
                if d.get("_type") == doc_type
                and not d["_id"].startswith(DRAFT_PREFIX)
                and d["_id"] > last_id
            ),
            key=lambda d: d["_id"],
        )
        if self.most_per_page is not None:
            limit = min(limit, self.most_per_page)
        return found[:limit]

    def _control(self, request: Request, doc_id: str) -> Response:
        """For the demo: ``POST /_fake/documents/<id>`` with JSON fields edits (or creates) a
        document, ``DELETE`` removes it; either then delivers the webhook, if one is set."""
        if request.method == "DELETE":
            if self.get(doc_id) is None:
                return _error(404, "Not found")
            self.delete(doc_id)
            deleted = True
        elif request.method == "POST":
            fields = request.get_json(silent=True)
            if not isinstance(fields, dict):
                return _error(400, "Send the fields to change as a JSON object")
            if self.get(doc_id) is None:
                self.put({"_id": doc_id, "_type": _type_of(doc_id), **fields})
            else:
                self.edit(doc_id, **fields)
            deleted = False
        else:
            return _error(405, "Use POST or DELETE")
        status: int | str | None = None
        if self.webhook_url:
            try:
                status = self.deliver_webhook(doc_id=doc_id, deleted=deleted)
            except requests.RequestException as error:  # the shop is not running, say
                status = f"not delivered: {error.__class__.__name__}"
        return Response(
            json.dumps({"_id": doc_id, "webhook_status": status}),
            200,
            content_type="application/json",
        )


def _type_of(doc_id: str) -> str:
    return doc_id.removeprefix(DRAFT_PREFIX).split("-", 1)[0]


def _error(status: int, message: str) -> Response:
    body = {"error": {"description": message, "type": "httpError"}, "statusCode": status}
    return Response(json.dumps(body), status, content_type="application/json")
