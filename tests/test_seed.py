"""The demo catalogue and the ``flask seed`` command."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from elysium.extensions import db
from elysium.models import Collection, Inventory, Product, ProductOption
from elysium.services.configuration import ENGRAVING_MAX_LENGTH
from elysium.services.seeding import load_demo_catalogue, variant_keys

STATIC = Path(__file__).resolve().parent.parent / "static"
ART = Path(__file__).resolve().parent.parent / "templates" / "art"


def table_counts() -> dict[str, int]:
    return {
        model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
        for model in (Collection, Product, ProductOption, Inventory)
    }


def test_seed_loads_the_demo_catalogue_and_running_it_again_changes_nothing(app, runner):
    result = runner.invoke(args=["seed"])
    assert result.exit_code == 0, result.output
    assert "4 collections and 24 products added" in result.output
    with app.app_context():
        first = table_counts()
    again = runner.invoke(args=["seed"])
    assert again.exit_code == 0
    assert "0 collections and 0 products added, 0 products updated, 0 stock rows added" in (
        again.output
    )
    with app.app_context():
        assert table_counts() == first
        assert first["collections"] == 4
        assert first["products"] == 24


def test_seeding_again_never_resets_stock(app, runner, catalogue):
    with app.app_context():
        row = db.session.scalars(select(Inventory).order_by(Inventory.id)).first()
        row.stock_level = 17
        db.session.commit()
        row_id = row.id
    runner.invoke(args=["seed"])
    with app.app_context():
        assert db.session.get(Inventory, row_id).stock_level == 17


def test_demo_catalogue_has_pieces_in_every_category_and_a_mix_of_stock():
    data = load_demo_catalogue()
    products = data["products"]
    assert 20 <= len(products) <= 30
    assert {p["category"] for p in products} == {"ring", "necklace", "earrings", "bracelet"}
    assert 3 <= len(data["collections"]) <= 4
    levels = [p["stock"].get(key, 0) for p in products for key in variant_keys(p)]
    assert any(level >= 3 for level in levels)
    assert any(level in (1, 2) for level in levels)
    assert any(level == 0 for level in levels)
    assert any(p["lead_time_weeks"] for p in products)
    assert any(not p["diamonds"] for p in products)


def test_only_rings_and_bracelets_offer_engraving():
    for product in load_demo_catalogue()["products"]:
        engravable = product["category"] in {"ring", "bracelet"}
        assert (product["engraving_fee"] is not None) == engravable, product["slug"]


def test_every_piece_and_collection_has_its_own_svg_artwork_with_no_inline_styles():
    """A collection's artwork is a static file; a piece's is a drawing (templates/art)."""
    data = load_demo_catalogue()
    artworks = [p["artwork"] for p in data["products"]] + [
        c["artwork"] for c in data["collections"]
    ]
    assert len(set(artworks)) == len(artworks)
    for artwork in artworks:
        folder = ART if artwork.startswith("products/") else STATIC / "img"
        svg = (folder / artwork).read_text()
        assert svg.lstrip().startswith("<svg")
        assert "style" not in svg
        assert "<script" not in svg
        assert "http://" not in svg.replace("http://www.w3.org/", "")
        assert "https://" not in svg


def test_stock_keys_name_real_variants():
    for product in load_demo_catalogue()["products"]:
        assert set(product["stock"]) <= set(variant_keys(product)), product["slug"]
        assert product["metals"][0]["delta"] == 0
        assert all(option["delta"] >= 0 for option in product["metals"] + product["diamonds"])
        assert len(product["name"]) < ENGRAVING_MAX_LENGTH * 4
