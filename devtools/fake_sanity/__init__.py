"""A local stand-in for Sanity's query API, for tests and the offline demo (development only).

``FakeSanityServer`` serves a ``FakeSanity`` WSGI app on 127.0.0.1 with the demo catalogue as
Sanity documents; point ``SANITY_API_HOST`` at its ``base_url``. See ``app.py`` for the test
hooks and ``python -m devtools.fake_sanity --help`` for the demo.
"""

from .app import DEFAULT_WEBHOOK_SECRET, FakeSanity, SeenRequest, sign
from .dataset import DATASET, PROJECT_ID, demo_documents
from .server import FakeSanityServer

__all__ = [
    "DATASET",
    "DEFAULT_WEBHOOK_SECRET",
    "PROJECT_ID",
    "FakeSanity",
    "FakeSanityServer",
    "SeenRequest",
    "demo_documents",
    "sign",
]
