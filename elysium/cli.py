"""``flask`` commands for operators and cron."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import with_appcontext

from elysium.extensions import db
from elysium.services.seeding import load_demo_catalogue, seed_catalogue


@click.command("seed")
@with_appcontext
def seed_command() -> None:
    """Load the demo catalogue (safe to run again: existing stock is never reset)."""
    report = seed_catalogue(db.session, load_demo_catalogue())
    db.session.commit()
    click.echo(f"Demo catalogue loaded: {report}.")


def register(app: Flask) -> None:
    app.cli.add_command(seed_command)
