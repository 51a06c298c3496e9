"""The edge: a request whose text can't be read is refused before anything reads it.

Every value a request hands the shop as text — a path segment, a query parameter, a form
field (urlencoded or multipart), a cookie — must be UTF-8 without NUL. PostgreSQL's text
columns can't hold NUL (a statement with one fails: a 500 where SQLite would store it), and
Werkzeug quietly turns bytes that aren't UTF-8 into U+FFFD or leaves them percent-encoded, so
what was sent and what the shop would store or look up differ. So the check reads the bytes
as the client sent them, decoded the way Werkzeug decodes them, and anything unreadable gets
the shop's 400 page (htmx the fragment) on every URL, before the CSRF check, the rate
limiter or a view.

A change's body must be a form as a browser sends it (urlencoded or multipart, without files:
the shop takes no uploads), or nothing: anything else gets the 415 page. Flask-WTF would
otherwise read a JSON body as the form, whose values (numbers, lists, objects) no field
expects, nor this check has seen. Only the webhooks (``webhooks`` blueprint) take JSON: the
Stripe webhook verifies its raw body as it came, and ``"\\u0000"`` inside JSON is six ASCII
characters. Of the headers, the
shop reads Host (checked against ``TRUSTED_HOSTS``), the HX-* headers (compared to fixed
strings), the CSRF and Stripe signature headers (compared to what the shop signed) and the
Referer (sign-in's way back); none reaches the database as text, so a header is refused only
for a NUL, which HTTP forbids in any field value (RFC 9110, section 5.5).
"""

from __future__ import annotations

import io
import re
from urllib.parse import unquote_to_bytes

from flask import Flask, Request, Response, current_app, request
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from elysium.errors import render_error, render_unsent, typed_in_form
from elysium.htmx import is_htmx
from elysium.urls import same_site_path

UNREADABLE = "It held characters we can't read. Please go back and try again."
NOT_A_FORM = "This address takes a form as a browser sends it. Please go back and try again."
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
# The blueprints whose views read a body of their own (signed JSON).
OWN_BODIES = frozenset({"webhooks"})

# Werkzeug unquotes a quoted cookie value's backslash escapes (``"\000"`` is a NUL): the same
# escapes, applied to the whole header, find every byte a cookie value can decode to.
COOKIE_ESCAPE = re.compile(rb"\\([0-3][0-7]{2}|.)")


def init_app(app: Flask) -> None:
    """Register the check. Call it before any extension registers its ``before_request``
    hooks, so that no CSRF check, rate limit or view reads what is refused."""
    app.before_request(refuse_unreadable_requests)


def refuse_unreadable_requests() -> Response | None:
    if not body_within_limit(request):
        current_app.logger.info("Refused an unsized body over the limit sent to %s", request.path)
        return render_error(413)
    part = unreadable_part(request)
    if part is not None:
        current_app.logger.info("Refused a request with unreadable text in its %s", part)
        # The page's header reads request.args, which a query string of raw bytes that aren't
        # UTF-8 would make raise.
        request.query_string = b""
        if part == "form" and not is_htmx() and (typed := typed_in_form()):
            # Nothing typed is lost: shown back without the NULs, bytes that aren't UTF-8 as
            # U+FFFD (as Werkzeug reads them), to copy into the form again. (htmx sent it from
            # a page that stays, with all that was typed: the message alone goes there; one
            # field checked as it is left is not the whole form.)
            back = same_site_path(request.referrer) or "/"
            return render_unsent(
                400,
                typed,
                heading="Your form was not sent",
                why="It held characters we can't read (shown as � below, or left out)",
                link=(back, "Go back to the form"),
            )
        return render_error(400, UNREADABLE)
    if not_a_form(request):
        current_app.logger.info("Refused a %s body sent to %s", request.mimetype, request.path)
        return render_error(415, NOT_A_FORM)
    return None


def body_within_limit(incoming: Request) -> bool:
    """Whether a body sent without a ``Content-Length`` (chunked) stays within
    ``MAX_CONTENT_LENGTH``. Werkzeug refuses a declared length over the limit (413), but a
    chunked body it reads only up to the limit and quietly cuts off, so a form would be read
    from its first megabyte. Such a body is read here, one byte past the limit at most, and
    handed on whole."""
    limit = incoming.max_content_length
    environ = incoming.environ
    if limit is None or incoming.content_length is not None:
        return True
    if "wsgi.input_terminated" not in environ or not incoming.headers.get("Transfer-Encoding"):
        return True  # a server that doesn't end the stream: Werkzeug reads nothing of it
    body = environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        return False
    environ["wsgi.input"] = io.BytesIO(body)
    return True


def not_a_form(incoming: Request) -> bool:
    """Whether a change's body is something other than a browser's form (JSON, say, or a
    form with a file in it), for a view that reads forms."""
    if incoming.method in ("GET", "HEAD", "OPTIONS") or incoming.blueprint in OWN_BODIES:
        return False
    if incoming.mimetype not in FORM_TYPES:
        return bool(incoming.content_length or incoming.headers.get("Transfer-Encoding"))
    if incoming.mimetype == "multipart/form-data":
        boundary = _multipart_boundary(incoming)
        return bool(boundary) and _holds_a_file(incoming.get_data(cache=True), boundary)
    return False


def _multipart_boundary(incoming: Request) -> bytes:
    """A multipart body's boundary as Werkzeug reads it, in ASCII; empty when it is not (an
    RFC 2231 ``boundary*=UTF-8''%E2%82%AC`` is read as "€"), as Werkzeug then reads no form."""
    try:
        return incoming.mimetype_params.get("boundary", "").encode("ascii")
    except UnicodeEncodeError:
        return b""


def _holds_a_file(body: bytes, boundary: bytes) -> bool:
    decoder = MultipartDecoder(boundary)
    decoder.receive_data(body)
    decoder.receive_data(None)
    try:
        while not isinstance(event := decoder.next_event(), Epilogue | NeedData):
            if isinstance(event, File):
                return True
    except ValueError:  # not a body Werkzeug can parse: its form comes out empty
        return False
    return False


def unreadable_part(incoming: Request) -> str | None:
    """Which part of the request holds a NUL or bytes that aren't UTF-8, or ``None``."""
    environ = incoming.environ
    # PATH_INFO is already percent-decoded by the server; WSGI hands bytes over as latin-1.
    if not is_text(environ.get("PATH_INFO", "").encode("latin-1")):
        return "path"
    if not is_text(unquote_to_bytes(incoming.query_string)):
        return "query string"
    if any(
        "\x00" in value
        for name, value in environ.items()
        if name.startswith(("HTTP_", "CONTENT_")) and isinstance(value, str)
    ):
        return "headers"
    cookies = environ.get("HTTP_COOKIE", "").encode("latin-1")
    if not is_text(COOKIE_ESCAPE.sub(_unescape, cookies)):
        return "cookies"
    if not form_is_text(incoming):
        return "form"
    return None


def is_text(raw: bytes) -> bool:
    """UTF-8 (no overlong forms, no surrogates: Python's codec refuses both) without NUL."""
    if b"\x00" in raw:
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def form_is_text(incoming: Request) -> bool:
    """Every field name and value of a form body is text; any other body passes untouched.

    The body is read once and kept, so Werkzeug parses the form from the same bytes later.
    """
    if incoming.mimetype == "application/x-www-form-urlencoded":
        return is_text(unquote_to_bytes(incoming.get_data(cache=True)))
    if incoming.mimetype == "multipart/form-data":
        boundary = _multipart_boundary(incoming)
        return not boundary or multipart_is_text(incoming.get_data(cache=True), boundary)
    return True


def multipart_is_text(body: bytes, boundary: bytes) -> bool:
    """Field values are checked as bytes, whatever charset a part claims; a file's content is
    binary and only its field name and file name are text."""
    decoder = MultipartDecoder(boundary)
    decoder.receive_data(body)
    decoder.receive_data(None)
    value: list[bytes] | None = None
    try:
        while not isinstance(event := decoder.next_event(), Epilogue | NeedData):
            if isinstance(event, Field | File):
                # A part without a name no browser sends; Werkzeug files it under None,
                # and Flask-WTF, looking for the CSRF token among the names, failed on it.
                if event.name is None:
                    return False
                if "\x00" in event.name + (getattr(event, "filename", None) or ""):
                    return False
                value = [] if isinstance(event, Field) else None
            elif isinstance(event, Data) and value is not None:
                value.append(event.data)
                if not event.more_data and not is_text(b"".join(value)):
                    return False
    except UnicodeDecodeError:  # a part's headers (its name) aren't UTF-8
        return False
    except ValueError:
        # Not a body Werkzeug can parse either: its form comes out empty, and the CSRF
        # check refuses the request.
        return True
    return True


def _unescape(match: re.Match[bytes]) -> bytes:
    escaped = match.group(1)
    return bytes([int(escaped, 8)]) if len(escaped) == 3 else escaped
