"""The benchmark's yardstick: about the least a Flask app can do to show a page of pieces.

One query (the first ``REFERENCE_CARDS`` published pieces with their collection's name) on the
shop's own PostgreSQL, through a pooled SQLAlchemy engine, rendered by a Jinja template
(``reference_page.html``) into a page of about the size of the shop's listing. No sessions,
no forms, no ORM, no security headers: what the framework itself costs. ``bench/run.py``
runs it under the same gunicorn settings as the shop and divides the shop's requests per
second by this app's.

    DATABASE_URL=postgresql+psycopg://... gunicorn --chdir bench reference_app:app
"""

from __future__ import annotations

import os

from flask import Flask, render_template
from sqlalchemy import create_engine, text

CARDS = int(os.environ.get("REFERENCE_CARDS", "20"))

engine = create_engine(os.environ["DATABASE_URL"], pool_size=2, max_overflow=0)
app = Flask(__name__, template_folder=".")

QUERY = text(
    """
    SELECT p.slug, p.name, p.base_price, p.currency, c.name AS collection
    FROM products p LEFT JOIN collections c ON c.id = p.collection_id
    WHERE p.published
    ORDER BY p.featured_rank NULLS LAST, p.released_at DESC
    LIMIT :cards
    """
)


@app.get("/")
def pieces() -> str:
    with engine.connect() as connection:
        rows = connection.execute(QUERY, {"cards": CARDS}).mappings().all()
    return render_template("reference_page.html", pieces=rows)
