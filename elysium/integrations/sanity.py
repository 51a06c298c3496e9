"""Sanity, the house's content studio, read through its HTTP query API (GROQ over GET).

The catalogue sync (``elysium.services.catalog_sync``) pages through every document of a type
with :func:`iter_documents` and re-reads one changed document with :func:`fetch_document`;
``POST /webhooks/sanity`` checks Sanity's signature with :func:`verify_webhook`.

Every answer is read in whole within ``SANITY_TIMEOUT_SECONDS``, by the clock: it is streamed
and read against that deadline (and a size cap, :data:`MAX_ANSWER_BYTES`), for requests' own
timeout is for each read of the socket, and an answer that keeps coming a little at a time (a
proxy or an edge under strain) was waited for however long it took. A 429, a 5xx, a timeout or
a refused connection is tried again (``SANITY_MAX_RETRIES`` times) after a growing pause, or
after the ``Retry-After`` Sanity asked for. A client may also be given a ``deadline`` that no
answer, pause or try goes past (``flask catalog sync``: ``SANITY_SYNC_TIMEOUT_SECONDS`` for the
whole run); when it passes, :class:`SanityDeadlineError`. When the tries run out, or Sanity
answers something unreadable, :class:`SanityError` is raised and nothing is half-read.

``SANITY_API_HOST`` points the client at the local stand-in in ``devtools/fake_sanity`` for
tests and the offline demo; it is accepted only for a loopback address, so a stray setting can
never send the studio's read token anywhere but Sanity. (Tests may also set
``SANITY_RETRY_BACKOFF_SECONDS``, the first pause before a retry, 0.5 s by default, in the
app's config; it is not read from the environment.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask, current_app
from urllib3.exceptions import HTTPError as TransportError
from urllib3.exceptions import ReadTimeoutError

from elysium.config import ConfigurationError
from elysium.urls import is_loopback_url

log = logging.getLogger(__name__)

# The fields the shop reads, in the shape the sync expects (the Sanity contract in the docs).
COLLECTION_FIELDS = (
    '"slug": slug.current, title, tagline, description, position, '
    '"image": image{"url": asset->url, alt}, "seo": seo{title, description}'
)
PRODUCT_FIELDS = (
    '"slug": slug.current, title, published, category, '
    '"collection": collection->slug.current, description, details, basePrice, currency, '
    "engravingFee, leadTimeWeeks, featuredRank, releasedAt, "
    "metals[]{code, label, priceDelta}, diamonds[]{code, label, priceDelta}, "
    '"images": images[]{"url": asset->url, alt}, "seo": seo{title, description}'
)
FIELDS = {"collection": COLLECTION_FIELDS, "product": PRODUCT_FIELDS}


def projection(doc_type: str | None = None) -> str:
    """The projection for one type; without a type, one that shapes either type by its own
    ``_type`` (a document's id need not say what it is)."""
    if doc_type is not None:
        return "{_id, _type, _rev, _updatedAt, " + FIELDS.get(doc_type, "...") + "}"
    branches = ", ".join(f'_type == "{t}" => {{{fields}}}' for t, fields in FIELDS.items())
    return "{_id, _type, _rev, _updatedAt, " + branches + "}"


LIST_QUERY = (
    '*[_type == $type && !(_id in path("drafts.**")) && _id > $lastId] | order(_id) [0...$limit]'
)
ONE_QUERY = '*[_id == $id && !(_id in path("drafts.**"))][0]'

DRAFT_PREFIX = "drafts."
# A dated version only: ``v1`` is Sanity's deprecated first API, ``vX`` its experimental one,
# and either could change what a query answers under the shop.
API_VERSION = re.compile(r"v\d{4}-\d{2}-\d{2}")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Never wait longer than this for one retry, whatever Retry-After says.
MAX_RETRY_WAIT_SECONDS = 30.0
SIGNATURE_HEADER = "sanity-webhook-signature"
# The most one answer may hold, inflated (a page of a hundred pieces is a few hundred kB).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
READ_SIZE = 64 * 1024


class SanityError(Exception):
    """Sanity could not be read: the tries ran out, or it answered something unreadable."""


class SanityDeadlineError(SanityError):
    """The client's ``deadline`` passed before Sanity had answered."""


class _TooSlowError(Exception):
    """An answer not read in whole by its deadline."""


def check_settings(app: Flask) -> None:
    """Refuse to start with a Sanity setup that could send the read token astray."""
    host = app.config.get("SANITY_API_HOST")
    if host and (urlsplit(host).scheme not in ("http", "https") or not is_loopback_url(host)):
        raise ConfigurationError(
            "SANITY_API_HOST may only point at a loopback address "
            f"(like http://127.0.0.1:12112), not {host!r}"
        )
    version = app.config.get("SANITY_API_VERSION") or ""
    if configured(app.config) and not API_VERSION.fullmatch(version):
        raise ConfigurationError(
            f"SANITY_API_VERSION must be a dated API version like v2025-02-19, not {version!r}"
        )
    if configured(app.config) and int(app.config.get("SANITY_SYNC_TIMEOUT_SECONDS") or 0) < 1:
        raise ConfigurationError("SANITY_SYNC_TIMEOUT_SECONDS must be at least 1")


def configured(config: Mapping[str, Any] | None = None) -> bool:
    """True when the catalogue comes from Sanity (a project id and a dataset are set)."""
    config = current_app.config if config is None else config
    return bool(config.get("SANITY_PROJECT_ID") and config.get("SANITY_DATASET"))


@dataclass
class SanityClient:
    """One conversation with Sanity's query API (a ``requests.Session`` kept open)."""

    project_id: str
    dataset: str
    api_version: str = "v2025-02-19"
    token: str | None = None
    api_host: str | None = None
    timeout: float = 10.0
    max_retries: int = 3
    backoff: float = 0.5
    # A ``time.monotonic()`` time that no answer, pause or try goes past (None: no limit but
    # each answer's ``timeout``).
    deadline: float | None = None
    max_answer_bytes: int = MAX_ANSWER_BYTES

    def __post_init__(self) -> None:
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        # Inflated here, against the size cap (see _read).
        self.session.headers["Accept-Encoding"] = "gzip"
        self.session.headers["User-Agent"] = "elysium-catalog-sync"
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SanityClient:
        if not configured(config):
            raise SanityError("Sanity is not configured (SANITY_PROJECT_ID, SANITY_DATASET)")
        return cls(
            project_id=config["SANITY_PROJECT_ID"],
            dataset=config["SANITY_DATASET"],
            api_version=config.get("SANITY_API_VERSION") or "v2025-02-19",
            token=config.get("SANITY_READ_TOKEN") or None,
            api_host=config.get("SANITY_API_HOST") or None,
            timeout=float(config.get("SANITY_TIMEOUT_SECONDS") or 10),
            max_retries=int(config.get("SANITY_MAX_RETRIES", 3)),
            backoff=float(config.get("SANITY_RETRY_BACKOFF_SECONDS", 0.5)),
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> SanityClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        if self.api_host:
            if not is_loopback_url(self.api_host):  # a client built by hand is held to it too
                raise SanityError("SANITY_API_HOST may only point at a loopback address")
            return self.api_host.rstrip("/")
        return f"https://{self.project_id}.api.sanity.io"

    @property
    def query_url(self) -> str:
        return f"{self.base_url}/{self.api_version}/data/query/{self.dataset}"

    def query(self, groq: str, params: Mapping[str, Any]) -> Any:
        """The ``result`` of one GROQ query (parameters are JSON-encoded, as Sanity wants)."""
        args = {"query": groq, **{f"${k}": json.dumps(v) for k, v in params.items()}}
        body = self._get(args)
        if not isinstance(body, dict) or "result" not in body:
            raise SanityError("Sanity answered without a result")
        return body["result"]

    def iter_documents(self, doc_type: str, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every published document of a type, ordered by ``_id``, one page per request, until
        a page comes back empty: Sanity promises no page as long as its slice until the end
        (its guide to paging reads on until an empty one), and a page taken for the last too
        soon made the pieces after it look gone."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        groq = LIST_QUERY + projection(doc_type)
        last_id = ""
        while True:
            page = self.query(groq, {"type": doc_type, "lastId": last_id, "limit": page_size})
            if not isinstance(page, list):
                raise SanityError("Sanity answered a page that is not a list")
            for doc in page:
                if not isinstance(doc, dict) or not isinstance(doc.get("_id"), str):
                    raise SanityError("Sanity answered a document without an _id")
                if doc["_id"] <= last_id:
                    raise SanityError("Sanity answered documents out of _id order")
                last_id = doc["_id"]
                if doc["_id"].startswith(DRAFT_PREFIX):
                    continue  # never reaches the shop, whatever the server sent
                yield doc
            if not page:
                return

    def fetch_document(self, doc_id: str) -> dict[str, Any] | None:
        """One published document by ``_id``; None if it is absent, or a draft."""
        if doc_id.startswith(DRAFT_PREFIX):
            return None
        doc = self.query(ONE_QUERY + projection(), {"id": doc_id})
        if doc is None:
            return None
        if not isinstance(doc, dict) or doc.get("_id") != doc_id:
            raise SanityError(f"Sanity answered something other than {doc_id!r}")
        return doc

    def _get(self, args: Mapping[str, str]) -> Any:
        attempts = self.max_retries + 1
        reason = ""
        for attempt in range(attempts):
            wait = self.backoff * (2**attempt)
            until = time.monotonic() + self.timeout
            if self.deadline is not None:
                until = min(until, self.deadline)
            left = until - time.monotonic()
            if left <= 0:
                raise self._out_of_time(reason)
            try:
                with self.session.get(
                    self.query_url, params=args, timeout=(left, left), stream=True
                ) as response:
                    body = self._read(response, until)
            except (requests.Timeout, ReadTimeoutError, _TooSlowError):
                reason = f"no answer within {self.timeout:g} s"
                if self._past_deadline():
                    raise self._out_of_time(reason) from None
            except (requests.ConnectionError, TransportError) as error:
                reason = f"could not connect ({error.__class__.__name__})"
            else:
                if response.status_code == 200:
                    try:
                        return json.loads(body)
                    except (ValueError, RecursionError) as error:
                        raise SanityError("Sanity answered something that is not JSON") from error
                reason = f"HTTP {response.status_code}"
                if response.status_code not in RETRY_STATUSES:
                    raise SanityError(f"Sanity refused the query: {reason} {_message(body)}")
                asked = _retry_after(response.headers.get("Retry-After"))
                if asked is not None:
                    wait = asked
            if attempt + 1 < attempts:
                wait = min(wait, MAX_RETRY_WAIT_SECONDS)
                if self.deadline is not None and time.monotonic() + wait >= self.deadline:
                    raise self._out_of_time(reason)
                log.warning("Sanity: %s; trying again in %.1f s", reason, wait)
                time.sleep(wait)
        raise SanityError(f"Sanity could not be read after {attempts} tries: {reason}")

    def _read(self, response: requests.Response, until: float) -> bytes:
        """The whole body of an answer, inflated, read by ``until`` (``time.monotonic()``) and
        no larger than ``max_answer_bytes``; each read of the socket waits only for what is
        left of the time."""
        limit = self.max_answer_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise SanityError(f"Sanity answered more than {limit} bytes")
        raw = response.raw
        body = bytearray()
        while True:
            left = until - time.monotonic()
            if left <= 0:
                raise _TooSlowError
            sock = getattr(raw.connection, "sock", None)
            if sock is not None:
                sock.settimeout(left)
            chunk = raw.read1(READ_SIZE, decode_content=False)
            if not chunk:
                break
            body += chunk
            if len(body) > limit:
                raise SanityError(f"Sanity answered more than {limit} bytes")
        return _inflated(bytes(body), response.headers.get("Content-Encoding", ""), limit)

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _out_of_time(self, reason: str) -> SanityDeadlineError:
        return SanityDeadlineError(
            "Sanity had not answered when the time given ran out"
            + (f" ({reason})" if reason else "")
        )


def _inflated(body: bytes, encoding: str, limit: int) -> bytes:
    """An answer's body as Sanity meant it (gzip is the only encoding the client asks for)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise SanityError(f"Sanity answered in an encoding the shop did not ask for: {encoding}")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise SanityError("Sanity answered a gzip body that does not inflate") from error
    if len(inflated) > limit:
        raise SanityError(f"Sanity answered more than {limit} bytes")
    return inflated


def _message(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        return str(error.get("description") or error.get("message") or "")
    return str(error or "")


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _client() -> SanityClient:
    return SanityClient.from_config(current_app.config)


def iter_documents(
    doc_type: str, page_size: int = 100, *, deadline: float | None = None
) -> Iterator[dict[str, Any]]:
    """Every published document of ``doc_type`` from the app's Sanity (see the module doc);
    ``deadline``, a ``time.monotonic()`` time, is the client's."""
    with _client() as client:
        client.deadline = deadline
        yield from client.iter_documents(doc_type, page_size)


def fetch_document(doc_id: str) -> dict[str, Any] | None:
    """One published document from the app's Sanity; None if absent or a draft."""
    with _client() as client:
        return client.fetch_document(doc_id)


def fetch_document_at_once(doc_id: str) -> dict[str, Any] | None:
    """:func:`fetch_document` tried once, answered in whole within
    ``SANITY_WEBHOOK_TIMEOUT_SECONDS``: for a change a webhook announced, applied straight
    after its answer by the web worker that gave it. With the usual timeout and retries a slow
    Sanity held that worker away from shoppers for most of a minute (past gunicorn's timeout
    when Sanity asked to be retried later), and an answer that trickled in held it until
    gunicorn's timeout."""
    client = _client()
    client.timeout = float(current_app.config.get("SANITY_WEBHOOK_TIMEOUT_SECONDS") or 3)
    client.max_retries = 0
    with client:
        return client.fetch_document(doc_id)


def webhook_signature(body: bytes, secret: str, timestamp_ms: int) -> str:
    """The ``sanity-webhook-signature`` header Sanity sends with ``body``."""
    digest = hmac.new(
        secret.encode("utf-8"), f"{timestamp_ms}.".encode() + body, hashlib.sha256
    ).digest()
    encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return f"t={timestamp_ms},v1={encoded}"


def _milliseconds(stamp: str) -> bool:
    """Whether a signature's ``t=`` is a time in milliseconds: ASCII digits, 13 or fewer
    (``int()`` would read "²" and choke on thousands of digits)."""
    return stamp.isascii() and stamp.isdigit() and len(stamp) <= 13


def verify_webhook(
    header: str | None,
    body: bytes,
    secret: str,
    *,
    now: float | None = None,
    tolerance_seconds: int = 300,
) -> bool:
    """Whether ``header`` (``t=<ms>,v1=<base64url HMAC-SHA256 of "<t>.<body>">``) signs
    ``body`` with ``secret``, within ``tolerance_seconds`` of ``now`` either way."""
    if not header or not secret:
        return False
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or not value:
            return False
        fields.setdefault(name, []).append(value)
    stamps = fields.get("t", [])
    signatures = fields.get("v1", [])
    if len(stamps) != 1 or not signatures or not _milliseconds(stamps[0]):
        return False
    timestamp_ms = int(stamps[0])
    now = time.time() if now is None else now
    if abs(now - timestamp_ms / 1000) > tolerance_seconds:
        return False
    expected = webhook_signature(body, secret, timestamp_ms).split(",v1=", 1)[1]
    return any(hmac.compare_digest(expected.encode(), sig.encode()) for sig in signatures)


def image_url(url: str, width: int) -> str:
    """A Sanity CDN image at ``width`` pixels, in the best format the browser takes."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}w={int(width)}&auto=format"


def srcset(url: str, widths: Sequence[int]) -> str:
    """An ``srcset`` value for a Sanity CDN image: one candidate per width."""
    return ", ".join(f"{image_url(url, w)} {int(w)}w" for w in widths)
