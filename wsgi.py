"""WSGI entry point: ``gunicorn wsgi:app``.

A real process starts here, so ``.env`` (beside this file) is loaded here, never by the app
factory; what the environment already says wins. The ``flask`` command loads ``.env`` itself.
``FLASK_SKIP_DOTENV=1`` turns both off (the test suite's own processes set it).
"""

from pathlib import Path

from dotenv import load_dotenv
from flask.helpers import get_load_dotenv

from elysium import create_app

if get_load_dotenv():
    load_dotenv(Path(__file__).resolve().parent / ".env")
app = create_app()
