"""Recorded Sanity changes: two appliers never both apply one change, and a change announced
again while it is being applied is applied again (the newer content is never lost)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from devtools.fake_sanity import FakeSanityServer
from elysium.extensions import db
from elysium.integrations import sanity
from elysium.models import CatalogChange, Product
from elysium.services import catalog_changes
from tests.conftest import make_app

RING = "product-aurelia-solitaire-ring"


@pytest.fixture
def shop(app: Flask) -> Iterator[Flask]:
    with FakeSanityServer() as studio:
        shop = make_app(
            app.config["SQLALCHEMY_DATABASE_URI"],
            **studio.settings(),
            SANITY_RETRY_BACKOFF_SECONDS=0.01,  # Sanity's failed answers, tried again at once
        )
        shop.extensions["test_studio"] = studio
        with shop.app_context():
            catalog_changes.record_change(db.session, "collection-aurelia", deleted=False)
            db.session.commit()
            report = catalog_changes.apply_due(
                db.session, fetch=sanity.fetch_document, currency="GBP"
            )
            assert report.applied == 1
            yield shop
            db.session.remove()


def apply(change: catalog_changes.Due) -> str | None:
    return catalog_changes.apply_change(
        db.session, change, fetch=sanity.fetch_document, currency="GBP"
    )


def ring_name() -> str | None:
    name = db.session.scalar(select(Product.name).where(Product.external_id == RING))
    db.session.commit()
    return name


def test_two_appliers_that_saw_the_same_change_apply_it_once(shop):
    catalog_changes.record_change(db.session, RING, deleted=False)
    db.session.commit()
    first = catalog_changes.due_changes(db.session)
    second = catalog_changes.due_changes(db.session)
    assert first == second
    assert len(first) == 1

    assert apply(first[0]) == "created"
    assert apply(second[0]) is None
    assert ring_name() == "Aurelia Solitaire Ring"
    assert db.session.scalars(select(CatalogChange)).all() == []


def test_a_change_announced_again_while_it_is_applied_is_kept_and_applied_again(shop):
    studio: FakeSanityServer = shop.extensions["test_studio"]
    catalog_changes.record_change(db.session, RING, deleted=False)
    db.session.commit()
    (seen,) = catalog_changes.due_changes(db.session)

    # The studio edits the piece and announces it between our read and our apply.
    studio.edit(RING, title="Renamed meanwhile")
    catalog_changes.record_change(db.session, RING, deleted=False)
    db.session.commit()

    assert apply(seen) is None  # it is no longer the change we saw: not ours to apply
    (newer,) = catalog_changes.due_changes(db.session)
    assert newer.version == 2
    assert apply(newer) == "created"
    assert ring_name() == "Renamed meanwhile"


def test_a_failed_try_waits_longer_each_time(shop):
    studio: FakeSanityServer = shop.extensions["test_studio"]
    studio.fail_next(100, status=500)
    catalog_changes.record_change(db.session, RING, deleted=False)
    db.session.commit()
    waits = []
    for _ in range(3):
        (change,) = catalog_changes.due_changes(db.session, now=catalog_changes.EVERYTHING)
        assert apply(change) == "failed"
        row = db.session.scalar(select(CatalogChange))
        waits.append(row.next_attempt_at - catalog_changes.utcnow())
        db.session.commit()
    assert waits[0] < waits[1] < waits[2]
    assert row.attempts == 3
    assert "HTTP 500" in row.last_error
    assert ring_name() is None
