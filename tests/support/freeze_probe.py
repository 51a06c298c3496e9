"""A WSGI app answering how many objects its worker's garbage collector has frozen
(``gc.get_freeze_count``), for ``tests/test_gunicorn_conf.py``."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(gc.get_freeze_count()).encode()]
