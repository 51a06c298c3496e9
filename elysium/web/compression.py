"""Compressing what the shop sends: pages, fragments, CSS, JavaScript, SVG, JSON.

After every request (:func:`compress`): a text response of at least ``MIN_SIZE`` bytes is
sent brotli-compressed to a browser that accepts ``br`` (and gzip-compressed to one that
accepts only ``gzip``), with ``Content-Encoding`` and ``Vary: Accept-Encoding``. A response
that is already encoded, streamed or sent from a file (``direct_passthrough``) and a body
with ``Cache-Control: no-transform`` are left as they are; a 304 has no body to compress.
Static files are compressed once per file by :mod:`elysium.web.static_files`, which uses
the same choice of encoding.

A strong ETag names exact bytes, so it can't stay on a compressed copy: it becomes weak, which
still matches on revalidation (``If-None-Match`` compares weakly) and says what is true, that
each encoding is the same page.

A page asked for from another site (``Sec-Fetch-Site: cross-site``: a link followed, or a
page another site opens) is sent uncompressed. A page carries the visitor's CSRF token next
to what the address asked for (a search, say); compressed, its size tells how much of a
guess put in the address matches the token, and another site can open the shop's pages in
the visitor's browser with guess after guess while someone on the network reads the sizes
(BREACH). The shop's own pages, and an address typed or bookmarked, are compressed as ever.
"""

from __future__ import annotations

import gzip
from types import ModuleType

from flask import Request, Response, request

brotli: ModuleType | None
try:
    import brotli
except ImportError:  # an optional speed-up: gzip alone still works
    brotli = None

COMPRESSIBLE = frozenset(
    {
        "text/html",
        "text/css",
        "text/plain",
        "text/csv",
        "text/xml",
        "text/javascript",
        "application/javascript",
        "application/json",
        "application/ld+json",
        "application/manifest+json",
        "application/xml",
        "image/svg+xml",
    }
)
# Below this, the headers cost more than compression saves.
MIN_SIZE = 500
# Pages are compressed on every request: settings that are fast and still compress well.
GZIP_LEVEL = 6
BROTLI_QUALITY = 5


def _quality(accepted: list[tuple[str, float]], coding: str) -> float:
    """How much the browser wants ``coding``: its own entry, else ``*``'s, else not at all."""
    wildcard = 0.0
    for name, quality in accepted:
        if name.lower() == coding:
            return quality
        if name == "*":
            wildcard = quality
    return wildcard


def choose_encoding(req: Request) -> str | None:
    """``br`` or ``gzip``, whichever the request's ``Accept-Encoding`` prefers (brotli on a
    tie, and only when the ``brotli`` package is installed), or ``None`` for neither."""
    accepted = list(req.accept_encodings)
    if not accepted:
        return None
    br = _quality(accepted, "br") if brotli is not None else 0.0
    gz = _quality(accepted, "gzip")
    if br > 0 and br >= gz:
        return "br"
    if gz > 0:
        return "gzip"
    return None


def encode(data: bytes, coding: str) -> bytes:
    if coding == "br":
        assert brotli is not None
        return brotli.compress(data, quality=BROTLI_QUALITY)
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def compress(response: Response) -> Response:
    """The after-request hook: compress the body when it is worth it and allowed."""
    status = response.status_code
    if status < 200 or status in (204, 206):
        return response
    if response.direct_passthrough or response.is_streamed:
        return response
    headers = response.headers
    if "Content-Encoding" in headers or response.mimetype not in COMPRESSIBLE:
        return response
    if "no-transform" in headers.get("Cache-Control", "").lower():
        return response
    data = response.get_data()
    if len(data) < MIN_SIZE:
        return response
    # A 304 too: it stands for the 200 it confirms. (As text: this runs on every page.)
    vary = headers.get("Vary")
    if not vary:
        headers["Vary"] = "Accept-Encoding"
    elif "accept-encoding" not in vary.lower():
        headers["Vary"] = f"{vary}, Accept-Encoding"
    if status == 304:
        return response
    if request.environ.get("HTTP_SEC_FETCH_SITE") == "cross-site" and (
        response.mimetype == "text/html"
    ):
        return response
    coding = choose_encoding(request)
    if coding is None:
        return response
    compressed = encode(data, coding)
    if len(compressed) >= len(data):
        return response
    response.set_data(compressed)
    response.headers["Content-Encoding"] = coding
    etag, weak = response.get_etag()
    if etag and not weak:
        response.set_etag(etag, weak=True)
    return response
