"""WSGI entry point: ``gunicorn wsgi:app``."""

from elysium import create_app

app = create_app()
