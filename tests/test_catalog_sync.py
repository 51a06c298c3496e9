"""The catalogue follows Sanity's documents: created, updated, unpublished, never half-written.

The service is fed plain documents (the query projection's shape), here made from the demo
catalogue, so the same pieces the shop seeds are the ones Sanity would return.
"""

from __future__ import annotations

import copy
import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import func, select, update

from elysium.extensions import db
from elysium.models import Inventory, Order, OrderLine, Product
from elysium.models.catalog import CatalogVersion, Collection
from elysium.services import catalog_changes, catalog_sync
from elysium.services.seeding import load_demo_catalogue
from tests.conftest import page_text
from tests.html import elements, text_of
from tests.support.checkout import CHAIN, add_chain, check_out

PROJECT_IMAGES = "https://cdn.sanity.io/images/abc123/production"


def collection_doc(data: dict) -> dict:
    return {
        "_id": f"collection-{data['slug']}",
        "_type": "collection",
        "_rev": "r1",
        "title": data["name"],
        "slug": data["slug"],
        "tagline": data["tagline"],
        "description": data["description"],
        "position": data["position"],
        "seo": {"title": data.get("seo_title"), "description": data.get("seo_description")},
    }


def product_doc(data: dict) -> dict:
    def options(items: list[dict]) -> list[dict]:
        return [{"code": o["code"], "label": o["label"], "priceDelta": o["delta"]} for o in items]

    return {
        "_id": f"product-{data['slug']}",
        "_type": "product",
        "_rev": "r1",
        "title": data["name"],
        "slug": data["slug"],
        "published": True,
        "category": data["category"],
        "collection": data["collection"],
        "description": data["description"],
        "details": list(data.get("details", [])),
        "basePrice": data["base_price"],
        "currency": "GBP",
        "engravingFee": data.get("engraving_fee"),
        "leadTimeWeeks": data.get("lead_time_weeks"),
        "featuredRank": data.get("featured"),
        "releasedAt": data["released"],
        "metals": options(data["metals"]),
        "diamonds": options(data.get("diamonds", [])),
        "images": [{"url": f"{PROJECT_IMAGES}/{data['slug']}-1200x1200.jpg", "alt": data["name"]}],
        "seo": {"title": data.get("seo_title"), "description": data.get("seo_description")},
    }


@pytest.fixture
def documents() -> tuple[list[dict], list[dict]]:
    data = load_demo_catalogue()
    collections = [collection_doc(c) for c in data["collections"]]
    products = [product_doc(p) for p in data["products"][:6]]
    return collections, products


def sync(app, collections, products) -> catalog_sync.SyncReport:
    with app.app_context():
        report = catalog_sync.sync_all(
            db.session, copy.deepcopy(collections), copy.deepcopy(products)
        )
        db.session.remove()
        return report


def next_hours_sync(app, collections, products) -> catalog_sync.SyncReport:
    """The sync an hour later: what the last one wrote is then old enough to be unpublished
    when Sanity no longer lists it (a row written just before a listing began may be the
    webhook's, written while it ran)."""
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=1), tick=True):
        return sync(app, collections, products)


def product_row(app, slug: str) -> dict:
    with app.app_context():
        product = db.session.scalar(select(Product).where(Product.slug == slug))
        found = {
            "id": product.id,
            "name": product.name,
            "base_price": product.base_price,
            "published": product.published,
            "external_id": product.external_id,
            "images": product.images,
            "collection": product.collection.slug if product.collection else None,
            "options": {(o.kind.value, o.code): (o.id, o.price_delta) for o in product.options},
            "stock": {row.variant_key: row.stock_level for row in product.inventory},
        }
        db.session.remove()
        return found


def count(app, model) -> int:
    with app.app_context():
        found = db.session.scalar(select(func.count()).select_from(model))
        db.session.remove()
        return found


def test_a_first_sync_creates_the_pieces_and_a_second_with_the_same_documents_changes_nothing(
    app, documents
):
    collections, products = documents
    report = sync(app, collections, products)
    assert (report.collections_created, report.created, report.skipped) == (4, 6, [])
    ring = product_row(app, "aurelia-solitaire-ring")
    assert ring["external_id"] == "product-aurelia-solitaire-ring"
    assert ring["collection"] == "aurelia"
    assert ring["images"][0]["url"].startswith(PROJECT_IMAGES)
    # Stock is not Sanity's: every variant of a new piece starts at zero.
    assert len(ring["stock"]) == 4 * 3
    assert set(ring["stock"].values()) == {0}

    again = sync(app, collections, products)
    assert (again.created, again.updated, again.unchanged, again.unpublished) == (0, 0, 6, 0)
    assert (again.collections_created, again.collections_updated) == (0, 0)
    assert product_row(app, "aurelia-solitaire-ring") == ring


def test_the_demo_pieces_are_adopted_by_slug_keeping_their_stock(app, catalogue, documents):
    collections, products = documents
    before = product_row(app, "aurelia-solitaire-ring")
    report = sync(app, collections, products)
    assert report.created == 0
    assert report.collections_created == 0
    after = product_row(app, "aurelia-solitaire-ring")
    assert after["id"] == before["id"]
    assert after["external_id"] == "product-aurelia-solitaire-ring"
    assert after["stock"] == before["stock"]  # a sync never resets a stock count


def test_a_re_sync_after_edits_updates_names_prices_and_options_keeping_option_ids(app, documents):
    collections, products = documents
    sync(app, collections, products)
    before = product_row(app, "aurelia-solitaire-ring")
    ring = products[0]
    ring["title"] = "Aurelia Solitaire"
    ring["basePrice"] = 199000
    ring["metals"] = [m for m in ring["metals"] if m["code"] != "rose-gold"]
    ring["metals"][-1]["priceDelta"] = 50000  # platinum
    ring["diamonds"].append({"code": "2.00ct", "label": "2.00 ct, F colour", "priceDelta": 990000})

    report = sync(app, collections, products)

    assert (report.updated, report.unchanged) == (1, 5)
    after = product_row(app, "aurelia-solitaire-ring")
    assert (after["name"], after["base_price"]) == ("Aurelia Solitaire", 199000)
    assert ("metal", "rose-gold") not in after["options"]
    assert after["options"][("metal", "platinum")] == (
        before["options"][("metal", "platinum")][0],
        50000,
    )
    assert (
        after["options"][("metal", "yellow-gold")][0]
        == before["options"][("metal", "yellow-gold")][0]
    )
    assert after["stock"]["platinum/2.00ct"] == 0  # a new variant gets its row at zero


def test_a_piece_sanity_no_longer_returns_is_unpublished_not_deleted(app, documents):
    collections, products = documents
    sync(app, collections, products)
    report = next_hours_sync(app, collections, products[1:])
    assert report.unpublished == 1
    ring = product_row(app, "aurelia-solitaire-ring")
    assert ring["published"] is False
    assert ring["stock"]
    assert count(app, Product) == 6
    # Back in Sanity, it is published again.
    sync(app, collections, products)
    assert product_row(app, "aurelia-solitaire-ring")["published"] is True


def on_sale(app, model=Product) -> int:
    with app.app_context():
        found = db.session.scalar(
            select(func.count()).select_from(model).where(model.published.is_(True))
        )
        db.session.remove()
        return found


def test_a_listing_without_most_of_the_catalogue_takes_none_of_it_off_sale(app, documents):
    """Sanity can answer 200 with no products at all (a read token whose role lost access to
    the type, a dataset being restored): the hourly sync took every piece off sale and said it
    had synced (found by review). More than half of the pieces (or collections) on sale going
    in one run is held back, and said; what was listed is written all the same."""
    collections, products = documents
    sync(app, collections, products)

    report = next_hours_sync(app, [], [])  # nothing at all
    assert (report.unpublished, report.collections_unpublished) == (0, 0)
    assert [str(held) for held in report.held_back] == [
        "6 of the 6 products on sale are not in Sanity's listing",
        "4 of the 4 collections on sale are not in Sanity's listing",
    ]
    assert (on_sale(app), on_sale(app, Collection)) == (6, 4)

    renamed = {**products[0], "title": "Renamed", "_rev": "r2"}
    report = next_hours_sync(app, collections, [renamed, products[1]])  # four of six missing
    assert (report.updated, report.unpublished) == (1, 0)
    assert [str(held) for held in report.held_back] == [
        "4 of the 6 products on sale are not in Sanity's listing"
    ]
    assert on_sale(app) == 6
    assert product_row(app, products[0]["slug"])["name"] == "Renamed"

    # Half of them may go at once.
    report = next_hours_sync(app, collections, products[:3])
    assert (report.unpublished, report.held_back) == (3, [])
    assert on_sale(app) == 3


def test_told_to_the_sync_takes_the_whole_catalogue_off_sale(app, documents):
    collections, products = documents
    sync(app, collections, products)
    an_hour_later = time_machine.travel(datetime.now(UTC) + timedelta(hours=1), tick=True)
    with an_hour_later, app.app_context():
        report = catalog_sync.sync_all(db.session, [], [], allow_mass_unpublish=True)
        db.session.remove()
    assert (report.unpublished, report.collections_unpublished, report.held_back) == (6, 4, [])
    assert (on_sale(app), on_sale(app, Collection)) == (0, 0)


def test_a_failed_listing_unpublishes_nothing(app, documents):
    collections, products = documents
    sync(app, collections, products)

    def broken_listing():
        yield copy.deepcopy(products[0])
        raise ConnectionError("Sanity went away")

    with app.app_context(), pytest.raises(ConnectionError):
        catalog_sync.sync_all(db.session, copy.deepcopy(collections), broken_listing())
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Product.published.is_(False))) == 0
        db.session.remove()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"basePrice": "1850.00"}, "basePrice must be a whole number"),
        ({"basePrice": -1}, "basePrice must be at least 30"),
        # Below what Stripe takes: the piece could be bagged but never paid for.
        ({"basePrice": 0}, "basePrice must be at least 30"),
        ({"basePrice": 29}, "basePrice must be at least 30"),
        ({"currency": "EUR"}, "not the shop's GBP"),
        ({"category": "tiara"}, "category 'tiara'"),
        ({"metals": [{"code": "silver", "label": "Silver", "priceDelta": 0}]}, "unknown code"),
        ({"diamonds": [{"code": "big", "label": "Big", "priceDelta": 0}]}, "unknown code"),
        ({"slug": "Not A Slug"}, "slug 'Not A Slug'"),
        ({"slug": "aurelia-signet-ring"}, "is taken by product-aurelia-signet-ring"),
        ({"collection": "atlantis"}, "collection 'atlantis' is not in the shop"),
        ({"title": None}, "title is missing"),
        ({"images": [{"url": "https://evil.example/x.jpg"}]}, "not a Sanity CDN image"),
        ({"metals": [{"code": {"x": 1}, "label": "?", "priceDelta": 0}]}, "unknown code"),
        ({"category": ["ring"]}, "category ['ring']"),
        ({"metals": []}, "metals must be a list"),
        ({"featuredRank": 2**40}, "featuredRank is too large"),
        # Past about 416,000 weeks the date it ships by is past the calendar's end.
        ({"leadTimeWeeks": 105}, "leadTimeWeeks must be at most 104"),
        ({"leadTimeWeeks": 2**31 - 1}, "leadTimeWeeks must be at most 104"),
    ],
)
def test_a_malformed_document_is_skipped_with_its_reason_and_nothing_half_written(
    app, documents, change, reason
):
    collections, products = documents
    sync(app, collections, products)
    before = product_row(app, "aurelia-solitaire-ring")
    ring = products[0]
    ring.update(
        change,
        title=change.get("title", "A Half-Written Name"),
        basePrice=change.get("basePrice", 100),
    )
    products[1]["title"] = "Aurelia Signet"

    report = sync(app, collections, products)

    [skipped] = report.skipped
    assert skipped.doc_id == "product-aurelia-solitaire-ring"
    assert reason in skipped.reason
    assert report.updated == 1  # the good document after the bad one still went in
    assert product_row(app, "aurelia-solitaire-ring") == before
    assert product_row(app, "aurelia-signet-ring")["name"] == "Aurelia Signet"


def test_option_codes_twice_in_one_document_are_refused(app, documents):
    collections, products = documents
    products[0]["metals"].append(dict(products[0]["metals"][0]))
    report = sync(app, collections, products)
    assert "code 'yellow-gold' twice" in report.skipped[0].reason
    assert report.created == 5


def test_drafts_never_reach_the_shop(app, documents):
    collections, products = documents
    draft = dict(products[0], _id="drafts.product-aurelia-solitaire-ring", title="Draft name")
    report = sync(app, collections, [*products, draft])
    assert report.skipped == []
    assert report.created == 6
    assert product_row(app, "aurelia-solitaire-ring")["name"] == "Aurelia Solitaire Ring"


def test_a_new_piece_made_to_order_gets_zero_stock_rows_and_can_be_ordered(app, documents):
    collections, products = documents
    sync(app, collections, products)
    new = dict(
        products[1],
        _id="product-aurelia-new-signet",
        slug="aurelia-new-signet",
        title="New Signet",
    )
    report = sync(app, collections, [*products, new])
    assert report.created == 1
    assert product_row(app, "aurelia-new-signet")["stock"] == {
        "yellow-gold": 0,
        "rose-gold": 0,
        "platinum": 0,
    }
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Inventory)) == sum(
            len(product_row(app, p["slug"])["stock"]) for p in [*products, new]
        )
        db.session.remove()


def test_a_webhook_deletion_unpublishes_one_piece(app, documents):
    collections, products = documents
    sync(app, collections, products)
    with app.app_context():
        assert catalog_sync.unpublish(db.session, "product-aurelia-bangle") is True
        assert catalog_sync.unpublish(db.session, "product-aurelia-bangle") is False
        db.session.remove()
    assert product_row(app, "aurelia-bangle")["published"] is False


def chain_doc(products: list[dict]) -> dict:
    [chain] = [p for p in products if p["slug"] == CHAIN]
    return chain


def test_an_order_placed_before_a_price_change_is_unchanged(app, shop, documents):
    collections, products = documents
    client = shop.client()
    add_chain(client)
    assert check_out(client).status_code == 303
    with shop.app.app_context():
        [before] = [
            (line.unit_price, line.product_name) for line in db.session.scalars(select(OrderLine))
        ]
        total = db.session.scalar(select(Order.total))
        db.session.remove()

    chain_doc(products)["basePrice"] += 50000
    chain_doc(products)["title"] = "Aurelia Chain, renamed"
    report = sync(app, collections, products)
    assert report.updated >= 1

    with shop.app.app_context():
        [after] = [
            (line.unit_price, line.product_name) for line in db.session.scalars(select(OrderLine))
        ]
        assert after == before
        assert db.session.scalar(select(Order.total)) == total
        db.session.remove()


LONG_WAIT = "aurelia-long-wait"


def pages_that_fail(app, client) -> list[str]:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    try:
        return [
            page
            for page in ("/", "/shop", f"/shop/{LONG_WAIT}", "/cart")
            if client.get(page).status_code >= 500
        ]
    finally:
        app.config["PROPAGATE_EXCEPTIONS"] = None


def test_a_lead_time_longer_than_the_house_promises_is_refused_and_never_breaks_the_pages(
    app, client, documents
):
    """The studio accepted any whole number of weeks up to 2**31 - 1, and the shop wrote it: a
    date that many weeks away is past the calendar's end, so the piece's page and the bag of
    everyone holding it answered 500, and the piece could not even be taken out of the bag.
    Now a lead time over two years skips the document with its reason, and one written before
    that promises no date."""
    collections, products = documents
    piece = dict(chain_doc(products), _id=f"product-{LONG_WAIT}", slug=LONG_WAIT, title="Long Wait")
    piece["leadTimeWeeks"] = 4
    sync(app, collections, [*products, piece])
    metal = piece["metals"][0]["code"]
    added = client.submit(
        f"/shop/{LONG_WAIT}",
        {"product": LONG_WAIT, "quantity": "1", "metal": metal},
        action="/cart/items",
    )
    assert added.status_code == 303
    assert "ships in about 4 weeks" in page_text(client.get("/cart"))

    piece.update(leadTimeWeeks=999_999, _rev="r2", _updatedAt="2030-01-01T00:00:00Z")
    report = sync(app, collections, [*products, piece])
    [skipped] = report.skipped
    assert skipped.doc_id == f"product-{LONG_WAIT}"
    assert "leadTimeWeeks must be at most 104" in skipped.reason
    assert report.updated == 0
    assert pages_that_fail(app, client) == []
    assert "ships in about 4 weeks" in page_text(client.get("/cart"))

    # A row the shop wrote before the studio was held to two years.
    with app.app_context():
        db.session.execute(
            update(Product).where(Product.slug == LONG_WAIT).values(lead_time_weeks=999_999)
        )
        db.session.commit()
        db.session.remove()
    assert pages_that_fail(app, client) == []
    assert "Made to order" in page_text(client.get(f"/shop/{LONG_WAIT}"))


def test_a_bag_line_whose_metal_was_removed_is_flagged_and_blocks_checkout(app, shop, documents):
    collections, products = documents
    client = shop.client()
    add_chain(client)  # in yellow gold
    chain = chain_doc(products)
    chain["metals"] = [m for m in chain["metals"] if m["code"] != "yellow-gold"]
    sync(app, collections, products)

    bag = page_text(client.get("/cart"))
    assert "This metal is no longer offered for this piece" in bag

    refused = check_out(client)
    assert refused.status_code != 303
    assert "This metal is no longer offered for this piece" in page_text(refused)
    assert count(app, Order) == 0


def test_a_bag_line_whose_piece_gained_a_choice_is_flagged_and_blocks_checkout(
    app, shop, documents
):
    """The chain, sold plain, gains a diamond choice in the studio. The line in the bag no
    longer names what would be sold under it (the first diamond would be taken), and its
    plain stock row is no longer offered. Before, the bag showed nothing wrong and checkout
    sold the old plain variant, reserving its row."""
    collections, products = documents
    client = shop.client()
    add_chain(client)  # in yellow gold, no diamond
    chain_doc(products)["diamonds"] = [{"code": "0.10ct", "label": "0.10 ct", "priceDelta": 30000}]
    sync(app, collections, products)

    assert "This piece's choices have changed" in page_text(client.get("/cart"))
    refused = check_out(client)
    assert refused.status_code != 303
    assert "This piece's choices have changed" in page_text(refused)
    assert count(app, Order) == 0


def test_a_piece_whose_only_stock_is_in_a_metal_taken_away_is_sold_out_on_its_card(
    app, shop, documents
):
    """The chain's rose gold is taken away in the studio while it alone has pieces left: its
    stock row stays (the ledger refers to it), but nobody can buy it, so the card says sold
    out, as the piece's own page does. Before, the card said nothing (in stock)."""
    collections, products = documents
    sync(app, collections, products)
    with app.app_context():
        db.session.execute(
            update(Inventory)
            .where(
                Inventory.product_id
                == select(Product.id).where(Product.slug == CHAIN).scalar_subquery(),
                Inventory.variant_key != "rose-gold",
            )
            .values(stock_level=0)
        )
        db.session.commit()

    def chain_card() -> str:
        page = shop.client().get("/shop?category=necklace")
        [card] = [
            text_of(card)
            for card in elements(page.get_data(as_text=True), "article.product-card")
            if card.select_one(f'a[href="/shop/{CHAIN}"]')
        ]
        return card

    assert "Sold out" not in chain_card()
    chain = chain_doc(products)
    chain["metals"] = [metal for metal in chain["metals"] if metal["code"] != "rose-gold"]
    sync(app, collections, products)

    assert "Sold out" in chain_card()
    assert "Sold out" in page_text(shop.client().get(f"/shop/{CHAIN}"))


def test_an_unpublished_piece_in_the_bag_is_flagged_and_blocks_checkout(app, shop, documents):
    collections, products = documents
    client = shop.client()
    sync(app, collections, products)  # the demo pieces are now Sanity's
    add_chain(client)
    next_hours_sync(app, collections, [p for p in products if p["slug"] != CHAIN])
    assert product_row(app, CHAIN)["published"] is False

    assert "This piece is no longer offered" in page_text(client.get("/cart"))
    refused = check_out(client)
    assert refused.status_code != 303
    assert "This piece is no longer offered" in page_text(refused)
    assert count(app, Order) == 0


def test_collections_are_upserted_by_id_and_unpublished_when_gone(app, documents):
    collections, products = documents
    sync(app, collections, products)
    collections[0]["title"] = "Aurelia, renamed"
    report = sync(app, collections, products)
    assert report.collections_updated == 1
    report = next_hours_sync(
        app, collections[:3], [p for p in products if p["collection"] != "ondine"]
    )
    assert report.collections_unpublished == 1
    with app.app_context():
        names = {c.slug: (c.name, c.published) for c in db.session.scalars(select(Collection))}
        db.session.remove()
    assert names["aurelia"] == ("Aurelia, renamed", True)
    assert names["ondine"][1] is False


def test_a_slug_held_by_a_shop_piece_of_another_document_is_refused(app, catalogue, documents):
    collections, products = documents
    sync(app, collections, products)
    products[0]["slug"] = "lumiere-halo-ring"  # a demo piece Sanity doesn't (yet) manage
    report = sync(app, collections, products)
    [skipped] = report.skipped
    assert "slug 'lumiere-halo-ring' is taken by a piece not from Sanity" in skipped.reason
    assert product_row(app, "aurelia-solitaire-ring")["external_id"] == products[0]["_id"]


def test_a_new_piece_from_sanity_has_a_product_page(app, client, documents):
    collections, products = documents
    sync(app, collections, products)
    page = client.get("/shop/aurelia-bangle")
    assert page.status_code == 200
    assert "Aurelia Bangle" in page_text(page)


def test_two_hosts_syncing_at_once_create_each_piece_once(app, documents):
    collections, products = documents
    start = threading.Barrier(2)
    reports: list[catalog_sync.SyncReport] = []

    def host() -> None:
        with app.app_context():
            start.wait()
            reports.append(
                catalog_sync.sync_all(
                    db.session, copy.deepcopy(collections), copy.deepcopy(products)
                )
            )
            db.session.remove()

    threads = [threading.Thread(target=host) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [report.skipped for report in reports] == [[], []]
    assert sum(report.created for report in reports) == 6
    assert count(app, Product) == 6
    assert count(app, Collection) == 4
    assert count(app, Inventory) == sum(len(product_row(app, p["slug"])["stock"]) for p in products)


EDITED = "2026-11-01T09:00:00.000000Z"  # when the documents of a sync's page were last edited
EDITED_LATER = "2026-11-01T09:05:00.000000Z"


def stamped(doc: dict, edited: str) -> dict:
    """``doc`` as Sanity sends it: with when it was last edited."""
    return {**copy.deepcopy(doc), "_updatedAt": edited}


def written_elsewhere(app, doc: dict) -> None:
    """Another host's webhook applier writes ``doc`` (what Sanity has now), and is done."""

    def write() -> None:
        with app.app_context():
            catalog_sync.sync_document(db.session, copy.deepcopy(doc))
            db.session.remove()

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(30)


def test_a_sync_page_older_than_a_change_the_webhook_wrote_does_not_overwrite_it(app, documents):
    """The hourly sync writes a page of documents fetched before it writes them. The studio
    takes a piece off sale and raises its price meanwhile, and the webhook writes that at once.
    Before, the sync then wrote its older copy over it: the piece back on sale at the old price
    until the next edit or the next hour. A copy older than the one written is not written."""
    collections, products = documents
    page = [stamped(doc, EDITED) for doc in products]
    sync(app, collections, page)
    target = page[3]
    newer = stamped(
        {**target, "published": False, "basePrice": target["basePrice"] + 100000}, EDITED_LATER
    )

    def listing():
        for at, doc in enumerate(copy.deepcopy(page)):
            if at == 1:  # while the sync writes its page, the webhook writes the change
                written_elsewhere(app, newer)
            yield doc

    with app.app_context():
        report = catalog_sync.sync_all(db.session, copy.deepcopy(collections), listing())
        db.session.remove()

    row = product_row(app, target["slug"])
    assert (row["published"], row["base_price"]) == (False, newer["basePrice"])
    assert report.skipped == []

    # A later edit is written, as always.
    sync(
        app,
        collections,
        [*page[:3], stamped({**newer, "published": True}, "2026-11-01T09:10:00Z"), *page[4:]],
    )
    assert product_row(app, target["slug"])["published"] is True


def test_a_sync_that_finds_every_piece_as_it_was_written_renews_nothing(app, documents):
    """Nothing is written, so nothing kept for shoppers is dropped: the catalogue's version
    stays. (Taking each row first, to compare it, is a write on SQLite.)"""
    collections, products = documents
    page = [stamped(doc, EDITED) for doc in products]
    sync(app, [stamped(doc, EDITED) for doc in collections], page)
    with app.app_context():
        before = db.session.scalar(select(CatalogVersion.token))
        db.session.remove()

    report = sync(app, [stamped(doc, EDITED) for doc in collections], page)

    assert (report.created, report.updated, report.unchanged) == (0, 0, len(page))
    with app.app_context():
        assert db.session.scalar(select(CatalogVersion.token)) == before
        db.session.remove()


def test_an_applier_whose_answer_comes_late_does_not_write_it_over_a_later_one(app, documents):
    """An applier fetched the document, and its answer came slowly: meanwhile the studio edited
    the piece again and another host's applier wrote that. Before, the late answer was written
    over it, and nothing was left to put it right."""
    collections, products = documents
    page = [stamped(doc, EDITED) for doc in products]
    sync(app, collections, page)
    target = page[2]
    newer = stamped({**target, "published": False}, EDITED_LATER)
    written_elsewhere(app, newer)

    with app.app_context():
        outcome = catalog_sync.sync_document(db.session, copy.deepcopy(target))
        db.session.remove()

    assert outcome == "older"
    assert product_row(app, target["slug"])["published"] is False


def test_a_piece_the_webhook_launched_while_the_sync_listed_is_not_unpublished(app, documents):
    """The listing goes in id order: a piece launched while it runs, whose id it has passed,
    is written by the webhook but missing from the listing. Before, the sync's end took it
    for one Sanity no longer has and hid it until the next hour."""
    collections, products = documents
    existing, launched = products[:5], {**products[5], "_id": "product-0000-launched"}
    sync(app, collections, existing)

    def listing():
        for at, doc in enumerate(copy.deepcopy(existing)):
            if at == 2:
                written_elsewhere(app, launched)
            yield doc

    an_hour_later = time_machine.travel(datetime.now(UTC) + timedelta(hours=1), tick=True)
    with an_hour_later, app.app_context():
        report = catalog_sync.sync_all(db.session, copy.deepcopy(collections), listing())
        db.session.remove()

    assert report.unpublished == 0
    assert product_row(app, launched["slug"])["published"] is True


def test_a_piece_made_again_in_the_studio_under_the_same_slug_reaches_the_shop(app, documents):
    """The studio deleted a piece and made it again under the same slug (a new document).
    The old piece is off sale, kept for its orders. Before, its row held the slug for ever and
    every sync skipped the new document: the piece never came back."""
    collections, products = documents
    sync(app, collections, products)
    old = products[1]
    made_again = {**copy.deepcopy(old), "_id": "product-made-again", "basePrice": 99000}
    listing = [doc for doc in products if doc is not old] + [made_again]

    next_hours_sync(app, collections, listing)  # the old one is found gone, and unpublished
    report = sync(app, collections, listing)

    assert report.skipped == []
    row = product_row(app, old["slug"])
    assert (row["external_id"], row["published"], row["base_price"]) == (
        "product-made-again",
        True,
        99000,
    )
    with app.app_context():
        retired = db.session.scalar(select(Product).where(Product.external_id == old["_id"]))
        assert (retired.slug, retired.published) == (f"{old['slug']}-retired-{retired.id}", False)
        db.session.remove()


def sanity_now(seconds: float = 0) -> str:
    """Now (and ``seconds`` on), as Sanity writes an edit's ``_updatedAt``."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def deleted_elsewhere(app, doc_id: str) -> str | None:
    """Another worker takes the studio's deletion webhook, and Sanity answers "gone"."""
    outcome: list[str | None] = []

    def apply() -> None:
        with app.app_context():
            catalog_changes.record_change(db.session, doc_id, deleted=True)
            db.session.commit()
            [change] = catalog_changes.due_changes(db.session, document_id=doc_id)
            outcome.append(
                catalog_changes.apply_change(
                    db.session, change, fetch=lambda _id: None, currency="GBP"
                )
            )
            db.session.remove()

    thread = threading.Thread(target=apply)
    thread.start()
    thread.join(30)
    return outcome[0]


def published(app, doc_id: str) -> bool:
    with app.app_context():
        found = db.session.scalar(select(Product.published).where(Product.external_id == doc_id))
        db.session.remove()
        return found


def test_a_deletion_whose_answer_comes_late_never_hides_a_piece_made_again(app, documents):
    """The studio deletes a piece and restores it a moment later: two webhooks, two workers.
    The first asks Sanity about the deletion and hears "gone"; as its answer comes, the second
    writes the restored piece, on sale. The first then hid it, and the hourly sync, finding
    that very edit written ("unchanged"), never put it back: hidden until the next edit."""
    collections, products = documents
    page = [stamped(doc, EDITED) for doc in products]
    sync(app, collections, page)
    target = page[2]

    def gone_while_restored(doc_id: str) -> None:
        written_elsewhere(app, stamped(target, sanity_now()))  # restored after it was asked
        return None  # what Sanity answered this worker: deleted

    with app.app_context():
        catalog_changes.record_change(db.session, target["_id"], deleted=True)
        db.session.commit()
        [change] = catalog_changes.due_changes(db.session, document_id=target["_id"])
        assert (
            catalog_changes.apply_change(
                db.session, change, fetch=gone_while_restored, currency="GBP"
            )
            == "unchanged"  # written meanwhile: the later write knows better
        )
        db.session.remove()
    assert published(app, target["_id"]) is True


@pytest.mark.parametrize("hidden_by", ["the shop", "Sanity saying it is gone"])
def test_a_piece_hidden_although_its_listed_edit_is_on_sale_is_shown_by_the_next_sync(
    app, documents, hidden_by
):
    """Whatever hid it (a deletion's late answer, a hand in the database, Sanity answering
    "gone" for a moment), a piece Sanity lists on sale, at the edit the shop holds, is put back
    on sale by the hourly sync, whose listing is read after it was hidden."""
    collections, products = documents
    page = [stamped(doc, EDITED) for doc in products]
    sync(app, collections, page)
    target = page[2]
    if hidden_by == "the shop":
        with app.app_context():
            catalog_sync.unpublish(db.session, target["_id"])
            db.session.remove()
    else:
        assert apply_recorded_change(app, target["_id"], lambda _id: None) == "unpublished"

    report = next_hours_sync(app, collections, page)

    assert published(app, target["_id"]) is True
    assert report.updated == 1


def test_the_end_of_a_sync_never_hides_a_piece_the_webhook_wrote_after_the_listing_was_read(
    app, documents
):
    """The sync's end reads which pieces its listing missed, then hides them one by one: a
    piece the webhook writes back on sale between the two was hidden anyway."""
    from tests.support.meanwhile import meanwhile

    collections, products = documents
    page = [stamped(doc, EDITED) for doc in products]
    sync(app, collections, page)
    target = page[4]
    listing = [doc for doc in page if doc is not target]  # deleted, as far as this listing knew

    restored = stamped(target, EDITED_LATER)
    an_hour_later = time_machine.travel(datetime.now(UTC) + timedelta(hours=1), tick=True)
    webhook = meanwhile(
        app, "UPDATE products SET published", lambda: written_elsewhere(app, restored)
    )
    with an_hour_later, webhook as ran:
        sync(app, collections, listing)

    assert ran
    assert published(app, target["_id"]) is True


def test_a_piece_moved_into_a_collection_whose_change_comes_after_it_is_applied_once_it_has(
    app, documents
):
    """In the studio a piece moves into a collection made a moment before, at a new price.
    Its change, applied first, named a collection the shop didn't have yet: it was "skipped"
    and forgotten as if malformed, and the shop sold the piece at the old price until the
    hourly sync. It is now tried again, as after an outage."""
    collections, products = documents
    sync(app, collections, [stamped(doc, EDITED) for doc in products])
    target = products[1]
    winter = stamped(
        {**collections[0], "_id": "collection-winter", "slug": "winter", "title": "Winter"},
        EDITED_LATER,
    )
    moved = stamped(
        {**target, "collection": "winter", "basePrice": target["basePrice"] + 50000},
        EDITED_LATER,
    )
    in_sanity = {winter["_id"]: winter, moved["_id"]: moved}

    def fetch(doc_id: str) -> dict | None:
        return copy.deepcopy(in_sanity.get(doc_id))

    with app.app_context():
        outcomes = []
        for doc_id in (moved["_id"], winter["_id"]):  # the piece's change first
            catalog_changes.record_change(db.session, doc_id, deleted=False)
            db.session.commit()
            for change in catalog_changes.due_changes(db.session, document_id=doc_id):
                outcomes.append(
                    catalog_changes.apply_change(db.session, change, fetch=fetch, currency="GBP")
                )
        assert outcomes == ["failed", "created"]
        catalog_changes.apply_due(
            db.session, fetch=fetch, currency="GBP", now=catalog_changes.EVERYTHING
        )
        price = db.session.scalar(
            select(Product.base_price).where(Product.external_id == target["_id"])
        )
        db.session.remove()
    assert price == moved["basePrice"]


@pytest.mark.parametrize(
    "written",
    [
        "this edit",
        "before revisions were kept",
        "another edit of that second",
        "an edit before the listed one",
    ],
)
def test_a_piece_deleted_as_the_hourly_sync_writes_its_listing_stays_hidden(
    app, documents, written
):
    """The sync's listing still holds the piece; the studio deletes it and the webhook hides
    it before the sync writes that page's copy. The copy must not put it back on sale:
    whether the row holds that very edit, one written before the shop kept revisions (the
    first sync after the deploy that began keeping them put it back, found by review),
    another edit of the same second, or an edit before the listed one (the listed edit's
    webhook failed, or is slow: its copy, made before the deletion, was newer than the row's
    and put the piece back on sale for an hour, found by review)."""
    collections, products = documents
    page = [stamped({**doc, "_rev": "listed"}, EDITED) for doc in products]
    sync(app, collections, page)
    if written in ("before revisions were kept", "another edit of that second"):
        revision = None if written == "before revisions were kept" else "another"
        with app.app_context():
            db.session.execute(update(Product).values(source_revision=revision))
            db.session.commit()
            db.session.remove()
    listed = [copy.deepcopy(doc) for doc in page]
    if written == "an edit before the listed one":
        listed[2] = stamped({**listed[2], "title": "Renamed", "_rev": "renamed"}, EDITED_LATER)
    target = listed[2]
    outcomes = []

    def listing():
        for doc in listed:
            if doc is target:
                outcomes.append(deleted_elsewhere(app, target["_id"]))
            yield copy.deepcopy(doc)

    an_hour_later = time_machine.travel(datetime.now(UTC) + timedelta(hours=1), tick=True)
    with an_hour_later, app.app_context():
        catalog_sync.sync_all(db.session, copy.deepcopy(collections), listing())
        db.session.remove()

    assert outcomes == ["unpublished"]
    assert published(app, target["_id"]) is False


def test_a_deletion_just_after_an_edit_hides_the_piece_whenever_the_edit_is_written(app, documents):
    """The studio edits a piece, then deletes it a second later; the edit's worker writes the
    edit as the deletion's worker asks Sanity. The edit was made before the deletion: the
    piece is hidden, not left on sale until the hourly sync."""
    collections, products = documents
    page = [stamped(doc, EDITED) for doc in products]
    sync(app, collections, page)
    target = page[2]
    edit = stamped({**target, "basePrice": target["basePrice"] + 10000}, sanity_now(-2))

    def gone_while_the_edit_is_written(doc_id: str) -> None:
        written_elsewhere(app, edit)
        return None

    with app.app_context():
        catalog_changes.record_change(db.session, target["_id"], deleted=True)
        db.session.commit()
        [change] = catalog_changes.due_changes(db.session, document_id=target["_id"])
        outcome = catalog_changes.apply_change(
            db.session, change, fetch=gone_while_the_edit_is_written, currency="GBP"
        )
        db.session.remove()

    assert outcome == "unpublished"
    assert published(app, target["_id"]) is False


def apply_recorded_change(app, doc_id: str, fetch, *, deleted: bool = False) -> str | None:
    """The webhook's change recorded, then applied by this worker, asking Sanity with
    ``fetch``."""
    with app.app_context():
        catalog_changes.record_change(db.session, doc_id, deleted=deleted)
        db.session.commit()
        [change] = catalog_changes.due_changes(db.session, document_id=doc_id)
        outcome = catalog_changes.apply_change(db.session, change, fetch=fetch, currency="GBP")
        db.session.remove()
        return outcome


def test_a_late_answer_is_not_written_over_a_correction_made_within_the_same_second(app, documents):
    """The studio sets a price and corrects it within the same second: Sanity stamps both
    alike, their revisions differ. The first edit's worker gets its answer slowly; the
    correction's worker writes the correction meanwhile. Before, the first answer was then
    written over it, the wrong price on sale until the next hourly sync. Now the worker asks
    Sanity again, and what it answers (the correction) stays."""
    collections, products = documents
    page = [stamped(doc, EDITED) for doc in products]
    sync(app, collections, page)
    target = page[2]
    wrong = {**stamped({**target, "basePrice": 10000}, EDITED_LATER), "_rev": "wrong"}
    right = {**stamped({**target, "basePrice": 1000000}, EDITED_LATER), "_rev": "corrected"}
    answers = []

    def answered_late(doc_id: str) -> dict:
        if not answers:
            written_elsewhere(app, right)  # the correction's webhook, applied by another worker
            answers.append(wrong)  # what Sanity answered this worker, before the correction
        else:
            answers.append(right)  # what Sanity answers when asked again
        return copy.deepcopy(answers[-1])

    outcome = apply_recorded_change(app, target["_id"], answered_late)

    assert product_row(app, target["slug"])["base_price"] == 1000000
    assert (outcome, len(answers)) == ("unchanged", 2)


def test_the_hourly_sync_skips_a_listed_edit_when_another_of_its_second_was_written_meanwhile(
    app, documents
):
    """The sync's page holds a price set in the studio; the studio corrects it within that
    second and the webhook writes the correction before the sync writes its page. Before, the
    page's copy was written over the correction (the later one read was taken for the later
    edit). Now it is skipped with its reason, and the next run, whose listing is read after
    the correction was written, settles it."""
    collections, products = documents
    page = [stamped(doc, EDITED) for doc in products]
    sync(app, collections, page)
    target_at = 2
    listed = [copy.deepcopy(doc) for doc in page]
    listed[target_at] = {
        **stamped({**listed[target_at], "basePrice": 10000}, EDITED_LATER),
        "_rev": "wrong",
    }
    right = {**stamped({**page[target_at], "basePrice": 1000000}, EDITED_LATER), "_rev": "right"}

    def listing():
        for at, doc in enumerate(listed):
            if at == target_at:
                written_elsewhere(app, right)
            yield copy.deepcopy(doc)

    with app.app_context():
        report = catalog_sync.sync_all(db.session, copy.deepcopy(collections), listing())
        db.session.remove()

    [skipped] = report.skipped
    assert skipped.doc_id == right["_id"]
    assert "another edit of the same second" in skipped.reason
    assert product_row(app, right["slug"])["base_price"] == 1000000

    # Sanity's own later word, listed once it was written, is written over what the shop holds.
    later = {**right, "basePrice": 990000, "_rev": "again"}
    report = sync(app, collections, [*page[:target_at], later, *page[target_at + 1 :]])
    assert (report.updated, report.skipped) == (1, [])
    assert product_row(app, right["slug"])["base_price"] == 990000


def test_an_edit_made_before_a_deletion_and_written_after_it_does_not_put_the_piece_back(
    app, documents
):
    """The studio edits a piece, then deletes it two seconds later. The edit's worker asked
    Sanity before the deletion and its answer comes slowly; meanwhile the deletion's worker
    hears "gone" and hides the piece. Before, the late answer was then written (newer than
    the edit the row held): the deleted piece back on sale until the hourly sync found it gone
    (found by review). The deletion is now the row's last edit, stamped with the second Sanity
    was asked in: the edit is older. An edit made after it, the piece restored, is written."""
    collections, products = documents
    page = [stamped(doc, EDITED) for doc in products]
    sync(app, collections, page)
    target = page[2]
    edit = {
        **stamped({**target, "basePrice": target["basePrice"] + 10000}, "2026-12-07T06:00:00Z"),
        "_rev": "edit",
    }

    def answered_after_the_deletion_was_applied(doc_id: str) -> dict:
        assert deleted_elsewhere(app, doc_id) == "unpublished"
        return copy.deepcopy(edit)  # what Sanity answered before the deletion

    deleted = datetime(2026, 12, 7, 6, 0, 2, 400000, tzinfo=UTC)
    with time_machine.travel(deleted, tick=True):
        outcome = apply_recorded_change(app, target["_id"], answered_after_the_deletion_was_applied)

    assert outcome == "older"
    assert product_row(app, target["slug"])["published"] is False

    restored = {**stamped(edit, "2026-12-07T06:00:05Z"), "_rev": "restored"}
    written_elsewhere(app, restored)
    assert product_row(app, target["slug"])["published"] is True


@pytest.mark.parametrize("next_answer", ["the piece restored", "gone"])
def test_a_piece_restored_within_the_second_its_deletion_was_asked_about_stays_on_sale(
    app, documents, next_answer
):
    """As test_a_deletion_whose_answer_comes_late_never_hides_a_piece_made_again, with
    ``_updatedAt`` as Sanity stamps it: to the second. The deletion's worker asks Sanity at
    06:00:00.400 and hears "gone"; the studio restores the piece at 06:00:00.700 (stamped
    06:00:00) and the restore's worker writes it first. Before, the restore, stamped before
    the moment Sanity was asked, was taken for an edit the deletion came after: the piece was
    hidden until its next edit (found by review). An edit of the second Sanity was asked in
    can't be told apart: nothing is hidden, the change is tried again, and Sanity's next
    answer settles it."""
    collections, products = documents
    page = [stamped(doc, EDITED) for doc in products]
    sync(app, collections, page)
    target = page[2]
    restored = {**stamped(target, "2026-12-07T06:00:00Z"), "_rev": "restored"}

    def gone_while_restored(doc_id: str) -> None:
        written_elsewhere(app, restored)  # the restore's webhook, applied by another worker
        return None  # what Sanity answered this worker when it asked: deleted

    asked = datetime(2026, 12, 7, 6, 0, 0, 400000, tzinfo=UTC)
    with time_machine.travel(asked, tick=False):
        outcome = apply_recorded_change(app, target["_id"], gone_while_restored, deleted=True)

    assert outcome == "failed"
    assert published(app, target["_id"]) is True

    in_sanity = restored if next_answer == "the piece restored" else None
    with app.app_context():
        report = catalog_changes.apply_due(
            db.session,
            fetch=lambda _id: copy.deepcopy(in_sanity),
            currency="GBP",
            now=catalog_changes.EVERYTHING,
        )
        db.session.remove()
    assert report.applied == 1
    assert published(app, target["_id"]) is (in_sanity is not None)
