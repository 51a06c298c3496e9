"""Loading the demo catalogue shipped in the package. Running it twice changes nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from elysium.models.catalog import Category, Collection, OptionKind, Product, ProductOption
from elysium.models.inventory import Inventory
from elysium.services.sql import AnySession


@dataclass
class SeedReport:
    collections_created: int = 0
    products_created: int = 0
    products_updated: int = 0
    variants_created: int = 0

    def __str__(self) -> str:
        return (
            f"{self.collections_created} collections and {self.products_created} products added, "
            f"{self.products_updated} products updated, {self.variants_created} stock rows added"
        )


def load_demo_catalogue() -> dict[str, Any]:
    text = resources.files("elysium").joinpath("data/demo_catalogue.json").read_text("utf-8")
    return json.loads(text)


def variant_keys(product_data: dict[str, Any]) -> list[str]:
    metals = [metal["code"] for metal in product_data["metals"]]
    diamonds = [diamond["code"] for diamond in product_data.get("diamonds", [])]
    if not diamonds:
        return metals
    return [f"{metal}/{diamond}" for metal in metals for diamond in diamonds]


def _set(obj: object, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed = True
    return changed


def _sync_options(product: Product, data: dict[str, Any]) -> bool:
    wanted = [
        (OptionKind.METAL, position, option) for position, option in enumerate(data["metals"])
    ] + [
        (OptionKind.DIAMOND, position, option)
        for position, option in enumerate(data.get("diamonds", []))
    ]
    existing = {(option.kind, option.code): option for option in product.options}
    changed = False
    keep = set()
    for kind, position, option_data in wanted:
        key = (kind, option_data["code"])
        keep.add(key)
        values = {
            "label": option_data["label"],
            "price_delta": option_data["delta"],
            "position": position,
        }
        if key in existing:
            changed |= _set(existing[key], values)
        else:
            product.options.append(ProductOption(kind=kind, code=option_data["code"], **values))
            changed = True
    for key, option in existing.items():
        if key not in keep:
            product.options.remove(option)
            changed = True
    return changed


def seed_catalogue(session: AnySession, data: dict[str, Any]) -> SeedReport:
    """Create or update collections and products by slug.

    Stock rows are only ever created: a variant that already has a row keeps its stock,
    so re-seeding never undoes sales or a stock count.
    """
    report = SeedReport()
    currency = data["currency"]
    collections = {c.slug: c for c in session.scalars(select(Collection))}
    for collection_data in data["collections"]:
        values = {
            "name": collection_data["name"],
            "tagline": collection_data["tagline"],
            "description": collection_data["description"],
            "position": collection_data["position"],
            "artwork": collection_data.get("artwork"),
            "seo_title": collection_data.get("seo_title"),
            "seo_description": collection_data.get("seo_description"),
        }
        collection = collections.get(collection_data["slug"])
        if collection is None:
            collection = Collection(slug=collection_data["slug"], **values)
            session.add(collection)
            collections[collection.slug] = collection
            report.collections_created += 1
        else:
            _set(collection, values)

    products = {
        p.slug: p
        for p in session.scalars(
            select(Product).options(selectinload(Product.options), selectinload(Product.inventory))
        )
    }
    for product_data in data["products"]:
        released = datetime.fromisoformat(product_data["released"]).replace(tzinfo=UTC)
        values = {
            "name": product_data["name"],
            "category": Category(product_data["category"]),
            "collection": collections[product_data["collection"]],
            "description": product_data["description"],
            "details": list(product_data.get("details", [])),
            "base_price": product_data["base_price"],
            "currency": currency,
            "engraving_fee": product_data.get("engraving_fee"),
            "lead_time_weeks": product_data.get("lead_time_weeks"),
            "featured_rank": product_data.get("featured"),
            "artwork": product_data.get("artwork"),
            "seo_title": product_data.get("seo_title"),
            "seo_description": product_data.get("seo_description"),
            "released_at": released,
        }
        product = products.get(product_data["slug"])
        if product is None:
            product = Product(slug=product_data["slug"], **values)
            session.add(product)
            _sync_options(product, product_data)
            report.products_created += 1
        else:
            changed = _set(product, values)
            if _sync_options(product, product_data) or changed:
                report.products_updated += 1

        stocked = {row.variant_key for row in product.inventory}
        for key in variant_keys(product_data):
            if key not in stocked:
                product.inventory.append(
                    Inventory(
                        variant_key=key,
                        stock_level=product_data.get("stock", {}).get(key, 0),
                        low_stock_threshold=product_data.get("low_stock_threshold", 2),
                    )
                )
                report.variants_created += 1
    session.flush()
    return report
