"""The shop's static files: fingerprinted URLs, a year's caching for the current one, and
each file compressed once.

``url_for('static', filename=...)`` adds ``?v=<fingerprint>``, the first characters of the
SHA-256 of the file's content, so a page always names the version of a stylesheet or script
it was drawn with, and the URL changes when the file does. A request carrying the current
fingerprint is answered ``public, max-age=31536000, immutable``: that URL can never show
anything else. Any other request for the file (no ``v``, an old one from a page kept
somewhere) gets today's file for the static max-age only (``STATIC_MAX_AGE``), like the art
drawings (``elysium.art``). Every answer carries an ETag (the content's hash, one per
encoding), so a browser that revalidates gets a 304 without the body.

A file's hash, and its gzip and brotli versions, are worked out once and kept while its
modification time and size stay the same (a developer's edit is picked up at the next
request). The compressed versions are made at the highest settings, since it happens once.

What a stylesheet names with ``url(...)`` can't carry the fingerprint; the shop's
stylesheets name nothing (their images are inline SVG in the pages), and the vendored htmx
has its version in its file name.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, abort, current_app, request, send_file
from werkzeug.security import safe_join

from elysium.web.compression import COMPRESSIBLE, MIN_SIZE, brotli, choose_encoding

YEAR = 365 * 24 * 3600
FINGERPRINT_LENGTH = 12
# Larger files are hashed but never held in memory, so never precompressed.
MAX_HELD_BYTES = 2 * 1024 * 1024


@dataclass
class StaticFile:
    """One file as it was when last read: its hash and any compressed versions made of it."""

    path: str
    modified: int
    size: int
    digest: str
    mimetype: str
    content: bytes | None
    encoded: dict[str, bytes | None] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.digest[:FINGERPRINT_LENGTH]

    @property
    def compressible(self) -> bool:
        return self.content is not None and self.mimetype in COMPRESSIBLE and self.size >= MIN_SIZE

    def encoding(self, coding: str) -> bytes | None:
        """The file in ``coding`` (``gzip``, ``br``), made on first use; ``None`` when that
        would not be smaller."""
        if coding not in self.encoded:
            assert self.content is not None
            compressed = (
                brotli.compress(self.content, quality=11)
                if coding == "br"
                else gzip.compress(self.content, compresslevel=9, mtime=0)
            )
            self.encoded[coding] = compressed if len(compressed) < self.size else None
        return self.encoded[coding]


class StaticFiles:
    """The static files that have been asked for, by path."""

    def __init__(self) -> None:
        self.files: dict[str, StaticFile] = {}

    def get(self, folder: str, filename: str) -> StaticFile | None:
        """``filename`` (relative to ``folder``) as it is now; ``None`` when it is not a file
        there."""
        path = safe_join(folder, filename)
        if path is None:
            return None
        try:
            stat = os.stat(path)
        except (OSError, ValueError):
            return None
        if not os.path.isfile(path):
            return None
        known = self.files.get(path)
        if known is not None and (known.modified, known.size) == (stat.st_mtime_ns, stat.st_size):
            return known
        fresh = self._read(path, stat.st_mtime_ns, stat.st_size)
        self.files[path] = fresh
        return fresh

    @staticmethod
    def _read(path: str, modified: int, size: int) -> StaticFile:
        digest = hashlib.sha256()
        content: bytes | None = None
        with open(path, "rb") as handle:
            if size <= MAX_HELD_BYTES:
                content = handle.read()
                digest.update(content)
            else:
                while chunk := handle.read(1024 * 1024):
                    digest.update(chunk)
        mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return StaticFile(path, modified, size, digest.hexdigest(), mimetype, content)


def static_file(filename: str) -> StaticFile | None:
    """The app's static file ``filename`` as it is now, or ``None``."""
    folder = current_app.static_folder
    if folder is None:
        return None
    files: StaticFiles = current_app.extensions["elysium.static_files"]
    return files.get(folder, filename)


def add_fingerprint(endpoint: str, values: dict[str, Any]) -> None:
    """``url_for('static', filename=...)`` gains ``v=<fingerprint>`` (a missing file none)."""
    if endpoint != "static" or "v" in values or not isinstance(values.get("filename"), str):
        return
    found = static_file(values["filename"])
    if found is not None:
        values["v"] = found.fingerprint


def serve(filename: str) -> Response:
    """A static file, compressed when the browser accepts it, cached as the module says."""
    found = static_file(filename)
    if found is None:
        abort(404)
    coding = choose_encoding(request) if found.compressible else None
    body = found.encoding(coding) if coding else None
    if body is None:
        response = send_file(found.path, mimetype=found.mimetype, etag=found.digest, max_age=None)
    else:
        response = current_app.response_class(body, mimetype=found.mimetype)
        response.headers["Content-Encoding"] = coding
        response.last_modified = datetime.fromtimestamp(found.modified / 1e9, UTC)
        response.set_etag(f"{found.digest}-{coding}")
    if found.compressible:
        response.vary.add("Accept-Encoding")
    response.cache_control.no_cache = None  # send_file's default, with no max-age given
    response.cache_control.public = True
    if request.args.get("v") == found.fingerprint:
        response.cache_control.max_age = YEAR
        response.cache_control.immutable = True
    else:
        response.cache_control.max_age = current_app.get_send_file_max_age(filename) or 0
    if body is not None:
        response.make_conditional(request)
    return response


def init_app(app: Flask) -> None:
    """Fingerprint the static URLs and serve the static endpoint from here."""
    app.extensions["elysium.static_files"] = StaticFiles()
    app.url_defaults(add_fingerprint)
    app.view_functions["static"] = serve
